"""Cross-project isolation of training: output folders, the model registry and server paths."""

import json
from pathlib import Path

import pytest

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training_support import dataset_version, launch_form_data, tiny_model_entry, tiny_params
from training.models import TrainingJob
from training.services.jobs import training_job_launch
from training.services.registry import model_entry_register_from_job


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture
def two_projects(db, tmp_path):
    """Project A with a job that produced a model, and project B managed by someone else."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    a, b = ProjectFactory(name="A"), ProjectFactory(name="B")
    MembershipFactory(project=a, user=alice, role="manager")
    MembershipFactory(project=b, user=bob, role="manager")
    base = tiny_model_entry(tmp_path / "tiny")
    job_a = training_job_launch(
        params=tiny_params(tmp_path), base_model=base, dataset_version=dataset_version(a), created_by=alice
    )
    folder = Path(job_a.config["output_dir"]) / "final"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    produced = model_entry_register_from_job(job=job_a, folder=folder)
    return {"alice": alice, "bob": bob, "a": a, "b": b, "base": base, "job_a": job_a, "produced": produced}


def _launch_page(client, project, method="dpo"):
    return f"/projects/{project.pk}/jobs/new/?method={method}", client.get(
        f"/projects/{project.pk}/jobs/new/?method={method}"
    )


@pytest.mark.parametrize("suffix", ["", "\n"])
def test_a_launch_cannot_reuse_another_jobs_output_folder(client, two_projects, suffix):
    """Another project's run token (readable from its paths) is refused, also with a trailing newline."""
    token = Path(two_projects["job_a"].config["output_dir"]).name
    client.force_login(two_projects["bob"])
    version_b = dataset_version(two_projects["b"])
    url, page = _launch_page(client, two_projects["b"])
    data = launch_form_data(page.context, two_projects["base"], version_b, action="launch")
    response = client.post(url, {**data, "run_token": token + suffix})
    assert response.status_code == 422 and "run_token" in response.context["form"].errors
    assert TrainingJob.objects.count() == 1


def test_a_launch_form_launches_once(client, two_projects):
    client.force_login(two_projects["bob"])
    version_b = dataset_version(two_projects["b"])
    url, page = _launch_page(client, two_projects["b"])
    data = launch_form_data(page.context, two_projects["base"], version_b, action="launch")
    assert client.post(url, data).status_code == 302
    again = client.post(url, data)  # the same form (and its token) posted twice
    assert again.status_code == 422 and "already" in again.context["form"].errors["run_token"][0]
    outputs = [job.config["output_dir"] for job in TrainingJob.objects.all()]
    assert len(set(outputs)) == len(outputs) == 2


def test_the_api_shows_no_server_paths(client, two_projects, settings):
    client.force_login(two_projects["alice"])
    root = str(settings.ARTIFACT_ROOT)
    models = client.get("/api/jobs/models")
    job = client.get(f"/api/jobs/{two_projects['job_a'].pk}")
    listed = client.get(f"/api/jobs?project_id={two_projects['a'].pk}")
    for response in (models, job, listed):
        assert response.status_code == 200 and root not in response.content.decode()
    assert all("path" not in entry for entry in models.json())


def test_models_a_job_produced_belong_to_its_project(client, two_projects, tmp_path):
    produced = two_projects["produced"]
    assert produced.project == two_projects["a"]
    annotator = UserFactory(username="carol")
    MembershipFactory(project=two_projects["b"], user=annotator, role="annotator")
    client.force_login(annotator)
    names = {entry["name"] for entry in client.get("/api/jobs/models").json()}
    assert produced.name not in names and two_projects["base"].name in names  # admin-registered: global
    client.force_login(two_projects["bob"])
    version_b = dataset_version(two_projects["b"])
    api = client.post(
        "/api/jobs",
        {"dataset_version_id": version_b.pk, "base_model_id": produced.pk, "config": {"method": "dpo"}},
        content_type="application/json",
    )
    assert api.status_code == 404
    url, page = _launch_page(client, two_projects["b"])
    assert produced not in page.context["form"].fields["base_model"].queryset
    data = launch_form_data(page.context, produced, version_b, action="launch")
    assert client.post(url, data).status_code == 422
    generation = client.get(f"/projects/{two_projects['b'].pk}/generate/")
    assert produced not in generation.context["form"].fields["model"].queryset
    assert TrainingJob.objects.count() == 1
    client.force_login(two_projects["alice"])
    assert produced.name in {entry["name"] for entry in client.get("/api/jobs/models").json()}


def test_job_configs_take_no_path_from_the_client(two_projects, tmp_path, settings):
    outside = tmp_path / "outside"
    job = training_job_launch(
        params=tiny_params(tmp_path, ref_cache_dir=str(outside), output_dir=str(outside)),
        base_model=two_projects["base"],
        dataset_version=dataset_version(two_projects["a"]),
        created_by=two_projects["alice"],
    )
    root = Path(settings.ARTIFACT_ROOT).resolve()
    for field in ("output_dir", "train_file", "ref_cache_dir"):
        assert Path(job.config[field]).resolve().is_relative_to(root), (field, job.config[field])
    assert json.dumps(job.config).count(str(outside)) == 0
