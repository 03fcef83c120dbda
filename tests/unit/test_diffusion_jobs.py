"""Diffusion-DPO in the studio: diffusion models in the registry, the launch checks and form, a job run end
to end through the worker's path, its sample grid and images on the job page, and its evaluation."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from PIL import Image

from jobs.models import JobState
from tests.diffusion_support import diffusion_params, image_pair_version, tiny_diffusion_entry
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training_support import dataset_version, launch_form_data, tiny_model_entry
from training.models import Artifact, ArtifactKind, Location, MetricPoint, ModelEntry, ModelKind, TrainingJob
from training.services.artifacts import Digests, artifact_record, artifacts_record
from training.services.jobs import estimate_total_steps, launch_problems, training_job_launch
from training.services.registry import (
    DIGITS_NAME,
    model_entry_problem,
    model_entry_register_from_job,
    model_entry_register_local,
)
from training.services.runner import training_job_run


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2


@pytest.fixture
def diffusion_model(db, tmp_path):
    return tiny_diffusion_entry(tmp_path / "tiny-pixel")


@pytest.fixture
def image_version(project):
    return image_pair_version(project)


# --- the registry ------------------------------------------------------------------------------------------


def test_a_diffusers_folder_registers_as_a_diffusion_model_and_a_folder_without_one_has_a_problem(
    db, tmp_path, capsys
):
    from training.engine.diffusion.tiny import save_tiny_pixel

    folder = save_tiny_pixel(tmp_path / "pixel")
    entry = model_entry_register_local(name="pixel", path=folder)
    assert entry.kind == ModelKind.DIFFUSION and model_entry_problem(entry) is None
    unet_only = tmp_path / "unet-only"
    (unet_only / "unet").mkdir(parents=True)
    assert model_entry_register_local(name="unet-only", path=unet_only).kind == ModelKind.DIFFUSION
    call_command("register_model", "pixel-again", str(folder))
    assert "Diffusion" in capsys.readouterr().out
    assert ModelEntry.objects.get(name="pixel-again").kind == ModelKind.DIFFUSION
    gone = ModelEntry.objects.create(
        name="gone", location=Location.LOCAL, path=str(tmp_path / "nowhere"), kind=ModelKind.DIFFUSION
    )
    assert "no model_index.json or unet/" in model_entry_problem(gone)


# --- launch checks and the form ---------------------------------------------------------------------------


def test_launch_refuses_a_diffusion_base_for_text_methods_and_a_text_base_for_diffusion_dpo(
    tmp_path, project, diffusion_model
):
    text_model = tiny_model_entry(tmp_path / "tiny-llama")
    text_version = dataset_version(ProjectFactory())
    problems = launch_problems(
        method="dpo", base_model=diffusion_model, dataset_version=text_version, queue="cpu"
    )
    assert "is a diffusion model: choose a language model" in problems["base_model"]
    images = image_pair_version(project)
    problems = launch_problems(
        method="diffusion_dpo", base_model=text_model, dataset_version=images, queue="cpu"
    )
    assert set(problems) == {"base_model"} and "choose a diffusion model" in problems["base_model"]
    problems = launch_problems(
        method="diffusion_dpo", base_model=diffusion_model, dataset_version=text_version, queue="cpu"
    )
    assert set(problems) == {"dataset_version"} and "image_pair" in problems["dataset_version"]
    assert (
        launch_problems(
            method="diffusion_dpo", base_model=diffusion_model, dataset_version=images, queue="cpu"
        )
        == {}
    )


def test_the_launch_form_offers_diffusion_dpo_for_image_pairs_with_diffusion_bases_and_the_digits_default(
    manager_client, manager, project, image_version, diffusion_model, tmp_path
):
    tiny_model_entry(tmp_path / "tiny-llama")
    page = manager_client.get(f"/projects/{project.pk}/jobs/new/")
    assert page.status_code == 200
    form = page.context["form"]
    assert page.context["method"] == "diffusion_dpo" and [
        m["name"] for g in page.context["method_groups"] for m in g["methods"]
    ] == ["diffusion_dpo"]
    assert {m.kind for m in form.fields["base_model"].queryset} == {ModelKind.DIFFUSION}
    assert form.initial["base_model"] == ModelEntry.objects.get(name=DIGITS_NAME).pk
    html = page.content.decode()
    beta_help = html[html.index('id="field-beta"') :].split("</div>", 1)[0]
    assert "½ convention" in beta_help and "beta_dpo" in beta_help
    assert 'name="sample_captions"' in html and "DDIM steps per sample" in html
    assert 'name="encode_cache_dir"' not in html and 'name="train_file"' not in html
    other = ProjectFactory()
    MembershipFactory(project=other, user=manager, role="manager")
    dataset_version(other)
    text_page = manager_client.get(f"/projects/{other.pk}/jobs/new/")
    assert "diffusion_dpo" not in [
        m["name"] for g in text_page.context["method_groups"] for m in g["methods"]
    ]
    assert ModelKind.DIFFUSION not in {
        m.kind for m in text_page.context["form"].fields["base_model"].queryset
    }


def test_the_form_refuses_a_text_base_for_diffusion_dpo_naming_base_model(
    manager_client, project, image_version, tmp_path
):
    text_model = tiny_model_entry(tmp_path / "tiny-llama")
    url = f"/projects/{project.pk}/jobs/new/?method=diffusion_dpo"
    data = launch_form_data(manager_client.get(url).context, text_model, image_version, action="launch")
    page = manager_client.post(url, data)
    assert page.status_code == 422 and "base_model" in page.context["form"].errors
    assert not TrainingJob.objects.exists()


def test_estimate_total_steps_counts_an_image_pair_versions_training_pairs(
    image_version, diffusion_model, tmp_path
):
    job = training_job_launch(
        params=diffusion_params(max_steps=None, epochs=2, batch_size=4),
        base_model=diffusion_model,
        dataset_version=image_version,
    )
    assert job.total_steps == estimate_total_steps(job.config, image_version) == 4  # 8 pairs / 4, 2 epochs
    assert job.config["encode_cache_dir"] and "ref_cache_dir" not in job.config


# --- a job end to end ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_diffusion_job_from_the_form_runs_records_samples_and_its_model_is_the_next_base(
    client, manager, project, tmp_path, monkeypatch
):
    import training.services.jobs as jobs

    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)  # this test is the worker
    version = image_pair_version(project)
    base = tiny_diffusion_entry(tmp_path / "tiny-pixel")
    client.force_login(manager)
    url = f"/projects/{project.pk}/jobs/new/?method=diffusion_dpo"
    fields = diffusion_params()
    fields.pop("method")
    data = launch_form_data(client.get(url).context, base, version, action="launch", **fields)
    assert client.post(url, data).status_code == 302
    job = TrainingJob.objects.get()
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED, TrainingJob.objects.get(pk=job.pk).error
    names = set(MetricPoint.objects.filter(job=job).values_list("name", flat=True))
    assert {
        "loss",
        "implicit_acc",
        "mse/winner",
        "mse/loser",
        "eval/implicit_acc",
        "eval/mse/winner",
    } <= names
    samples = Artifact.objects.filter(job=job, kind=ArtifactKind.SAMPLES).order_by("path")
    assert [a.path.rsplit("/", 1)[1] for a in samples] == ["step-0", "step-2", "step-4"]
    produced = ModelEntry.objects.get(produced_by=job)
    assert produced.kind == ModelKind.DIFFUSION and (Path(produced.path) / "model_index.json").is_file()
    assert produced.project_id == project.pk
    assert (
        launch_problems(method="diffusion_dpo", base_model=produced, dataset_version=version, queue="cpu")
        == {}
    )
    log = (Path(job.config["output_dir"]) / "log.txt").read_text()
    assert "evaluation report skipped" not in log

    detail = client.get(f"/projects/{project.pk}/jobs/{job.pk}/")
    assert detail.context["samples"]["step"] == 4 and len(detail.context["samples"]["samples"]) == 2
    assert [p["id"] for p in detail.context["panels"]][:3] == ["loss", "implicit_acc", "mse"]
    image = client.get(f"/projects/{project.pk}/jobs/{job.pk}/samples/4/sample-0.png")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    evaluation = client.get(f"/projects/{project.pk}/jobs/{job.pk}/evaluation/")
    report = evaluation.context["report"]
    assert report["kind"] == "diffusion" and report["base_step"] == 0 and report["trained_step"] == 4
    assert report["implicit_accuracy_before"] == 0.5
    assert report["implicit_accuracy_after"] == pytest.approx(
        MetricPoint.objects.get(job=job, name="eval/implicit_acc", step=4).value
    )
    assert len(report["samples"]) == 2 and report["mse"]["trained"]["winner"] is not None
    html = evaluation.content.decode()
    assert (
        f"/jobs/{job.pk}/samples/0/sample-0.png" in html and f"/jobs/{job.pk}/samples/4/sample-0.png" in html
    )

    follow_up = training_job_launch(
        params=diffusion_params(max_steps=2), base_model=produced, dataset_version=version, created_by=manager
    )
    assert follow_up.config["model"] == f"local:{produced.path}"
    assert training_job_run(job_id=follow_up.pk) == JobState.SUCCEEDED, TrainingJob.objects.get(
        pk=follow_up.pk
    ).error


# --- the sample grid and its images --------------------------------------------------------------------


def _fake_samples(job, step: int, captions: list[str]) -> Path:
    """A samples folder as the runtime writes it, recorded as the runner's on_saved does."""
    folder = Path(job.config["output_dir"]) / "samples" / f"step-{step}"
    folder.mkdir(parents=True)
    entries = []
    for i, caption in enumerate(captions):
        Image.new("L", (16, 16), 40 * i + step).save(folder / f"sample-{i}.png")
        entries.append({"file": f"sample-{i}.png", "caption": caption, "seed": i})
    (folder / "samples.json").write_text(json.dumps({"samples": entries, "steps": 3, "guidance_scale": 3.0}))
    (folder / "secret.txt").write_text("not a sample")
    artifact_record(job=job, path=folder, digests=Digests())
    return folder


@pytest.fixture
def sampled_job(project, image_version, diffusion_model, manager):
    job = training_job_launch(
        params=diffusion_params(),
        base_model=diffusion_model,
        dataset_version=image_version,
        created_by=manager,
    )
    _fake_samples(job, 0, ["a red cat", "<script>alert(1)</script>"])
    _fake_samples(job, 2, ["a red cat", "<script>alert(1)</script>"])
    return job


def test_sample_folders_are_samples_artifacts_kept_when_the_attempt_completes_the_list(sampled_job):
    assert Artifact.objects.filter(job=sampled_job, kind=ArtifactKind.SAMPLES).count() == 2
    artifacts_record(job=sampled_job)
    paths = Artifact.objects.filter(job=sampled_job, kind=ArtifactKind.SAMPLES).values_list("path", flat=True)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["step-0", "step-2"]


def test_the_job_page_shows_the_latest_steps_grid_with_escaped_captions_and_earlier_steps(
    manager_client, project, sampled_job
):
    url = f"/projects/{project.pk}/jobs/{sampled_job.pk}/"
    html = manager_client.get(url).content.decode()
    assert 'id="job-samples"' in html and "after step 2" in html
    assert f"/jobs/{sampled_job.pk}/samples/2/sample-1.png" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert 'data-step="0"' in html and "?part=samples&amp;step=0" in html  # the earlier step's link
    grid = manager_client.get(f"{url}?part=samples&step=0", headers={"HX-Request": "true"})
    body = grid.content.decode()
    assert grid.status_code == 200 and body.lstrip().startswith('<section class="card" id="job-samples"')
    assert f"/jobs/{sampled_job.pk}/samples/0/sample-0.png" in body and "base model" in body
    assert "?part=samples&amp;step=0" in body  # a chosen step stays chosen while the grid polls
    latest = manager_client.get(f"{url}?part=samples", headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 2s"' in latest and "after step 2" in latest


def test_a_sample_image_is_served_as_png_with_nosniff_to_members_only(
    client, manager, project, sampled_job, annotator
):
    url = f"/projects/{project.pk}/jobs/{sampled_job.pk}/samples/2/sample-0.png"
    assert client.get(url).status_code == 302  # login first
    client.force_login(manager)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=ProjectFactory(), user=outsider, role="manager")
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    other_project = ProjectFactory()
    MembershipFactory(project=other_project, user=outsider, role="manager")
    assert (
        client.get(f"/projects/{other_project.pk}/jobs/{sampled_job.pk}/samples/2/sample-0.png").status_code
        == 404
    )


@pytest.mark.parametrize(
    "name",
    [
        "samples.json",
        "secret.txt",
        "sample-7.png",  # the grid's pattern, but not listed
        "..",
        "..%2Fstep-0%2Fsample-0.png",
        "%2E%2E%2F%2E%2E%2Fconfig.yaml",
        "sample-0.png%00.txt",
        "sample-0.PNG",
    ],
)
def test_a_sample_name_not_in_the_manifest_is_refused(manager_client, project, sampled_job, name):
    response = manager_client.get(f"/projects/{project.pk}/jobs/{sampled_job.pk}/samples/2/{name}")
    assert response.status_code == 404


def test_a_step_without_samples_is_not_found(manager_client, project, sampled_job):
    assert (
        manager_client.get(f"/projects/{project.pk}/jobs/{sampled_job.pk}/samples/1/sample-0.png").status_code
        == 404
    )


def test_a_diffusion_job_from_another_job_registers_as_diffusion(project, sampled_job, tmp_path):
    from training.engine.diffusion.tiny import save_tiny_pixel

    final = save_tiny_pixel(Path(sampled_job.config["output_dir"]) / "final")
    entry = model_entry_register_from_job(job=sampled_job, folder=final)
    assert (
        entry.kind == ModelKind.DIFFUSION
        and entry.location == Location.JOB
        and model_entry_problem(entry) is None
    )
