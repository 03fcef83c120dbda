"""A job's disk: checkpoint retention through a real run, deleting a finished job's checkpoints or the job
(and the refusals), the manager-only buttons and the disk-usage line of the jobs page."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from jobs.models import JobState
from tests.factories import MembershipFactory, UserFactory
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import Artifact, ArtifactKind, MetricPoint, ModelEntry, TrainingJob
from training.services.artifacts import Digests, artifact_record, artifacts_record
from training.services.job_storage import folder_usage, job_artifacts_delete, job_delete
from training.services.jobs import training_job_launch
from training.services.registry import model_entry_register_from_job
from training.services.runner import training_job_run

WEIGHTS, STATE = 1000, 300


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2


@pytest.fixture
def base_model(db, tmp_path):
    return tiny_model_entry(tmp_path / "tiny")


@pytest.fixture
def version(project):
    return dataset_version(project)


def _launch(tmp_path, base_model, version, manager, **overrides):
    return training_job_launch(
        params=tiny_params(tmp_path, **overrides),
        base_model=base_model,
        dataset_version=version,
        created_by=manager,
    )


def _checkpoint(out: Path, step: int) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * WEIGHTS)
    (folder / "trainer_state.pt").write_bytes(b"s" * STATE)
    return folder


@pytest.fixture
def finished(tmp_path, base_model, version, manager):
    """A succeeded job as a run leaves it: checkpoints 2 and 4, final/ hard-linking checkpoint-4's
    weights, metrics and log, a private folder a killed writer left, and its model registered."""

    def build(*, state=JobState.SUCCEEDED, registered=True):
        job = _launch(tmp_path, base_model, version, manager)
        TrainingJob.objects.filter(pk=job.pk).update(state=state, step=4)
        job.refresh_from_db()
        out = Path(job.config["output_dir"])
        _checkpoint(out, 2)
        last = _checkpoint(out, 4)
        (out / "final").mkdir()
        (out / "final" / "model.safetensors").hardlink_to(last / "model.safetensors")
        (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
        (out / "log.txt").write_text("succeeded\n")
        (out / ".checkpoint-6.1-abcd.tmp").mkdir()
        (out / ".checkpoint-6.1-abcd.tmp" / "model.safetensors").write_bytes(b"p" * 50)
        MetricPoint.objects.create(job=job, step=1, name="loss", value=0.7, wall_time=0.0)
        artifacts_record(job=job)
        if registered:
            model_entry_register_from_job(job=job, folder=out / "final")
        return job, out

    return build


def _names(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


@pytest.mark.django_db(transaction=True)
def test_a_real_job_keeps_its_two_newest_checkpoints_and_records_only_those(
    tmp_path, base_model, version, manager
):
    job = _launch(tmp_path, base_model, version, manager, save_steps=1, keep_checkpoints=2)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    out = Path(job.config["output_dir"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]
    checkpoints = Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT)
    assert sorted(a.path.rsplit("/", 1)[1] for a in checkpoints) == ["checkpoint-5", "checkpoint-6"]
    produced = ModelEntry.objects.get(produced_by=job)
    assert (Path(produced.path) / "model.safetensors").is_file()


def test_recording_a_checkpoint_drops_the_rows_of_those_the_run_deleted(finished):
    job, out = finished()
    import shutil

    shutil.rmtree(out / "checkpoint-2")
    assert (
        artifact_record(job=job, path=out / "checkpoint-2", digests=Digests()) is None
    )  # gone: not recorded
    artifact_record(job=job, path=_checkpoint(out, 6), digests=Digests())
    paths = Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT).values_list("path", flat=True)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["checkpoint-4", "checkpoint-6"]


def test_deleting_artifacts_removes_checkpoints_and_keeps_the_registered_final_model(
    finished, django_capture_on_commit_callbacks
):
    job, out = finished()
    with django_capture_on_commit_callbacks(execute=True):
        freed = job_artifacts_delete(job=job)
    # checkpoint-2 whole, checkpoint-4's state and the leftover; checkpoint-4's weights live on in final/
    assert freed == WEIGHTS + 2 * STATE + 50
    assert _names(out) == ["final", "log.txt", "metrics.jsonl"]
    assert (out / "final" / "model.safetensors").stat().st_size == WEIGHTS
    kinds = set(Artifact.objects.filter(job=job).values_list("kind", flat=True))
    assert kinds == {ArtifactKind.MODEL, ArtifactKind.METRICS}
    assert ModelEntry.objects.filter(produced_by=job).exists()
    assert MetricPoint.objects.filter(job=job).count() == 1


def test_deleting_artifacts_with_the_model_removes_final_and_the_unused_registry_entry(
    finished, django_capture_on_commit_callbacks
):
    job, out = finished()
    with django_capture_on_commit_callbacks(execute=True):
        freed = job_artifacts_delete(job=job, include_model=True)
    assert freed == 2 * (WEIGHTS + STATE) + 50
    assert _names(out) == ["log.txt", "metrics.jsonl"]
    assert not ModelEntry.objects.filter(name=f"job-{job.pk}-dpo").exists()


def test_deleting_a_model_another_job_starts_from_is_refused_and_nothing_is_deleted(
    finished, tmp_path, version, manager, django_capture_on_commit_callbacks
):
    job, out = finished()
    entry = ModelEntry.objects.get(produced_by=job)
    TrainingJob.objects.create(method="dpo", config={}, base_model=entry, dataset_version=version)
    before = _names(out)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(ValidationError, match="1 training job"),
    ):
        job_artifacts_delete(job=job, include_model=True)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(ValidationError, match="still used by"),
    ):
        job_delete(job=job)
    assert _names(out) == before
    assert TrainingJob.objects.filter(pk=job.pk).exists() and ModelEntry.objects.filter(pk=entry.pk).exists()


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING])
def test_a_job_that_has_not_finished_keeps_its_files(finished, state, django_capture_on_commit_callbacks):
    job, out = finished(state=state)
    before = _names(out)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ValidationError, match="cancel it"):
            job_artifacts_delete(job=job)
        with pytest.raises(ValidationError, match="cancel it"):
            job_delete(job=job)
    assert _names(out) == before


def test_deleting_a_job_removes_its_row_metrics_model_and_folder(
    finished, django_capture_on_commit_callbacks
):
    job, out = finished(state=JobState.CANCELLED)
    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=job)
    assert not out.exists()
    assert not TrainingJob.objects.filter(pk=job.pk).exists()
    assert not MetricPoint.objects.filter(job_id=job.pk).exists() and not Artifact.objects.filter(
        job_id=job.pk
    )
    assert not ModelEntry.objects.filter(name=f"job-{job.pk}-dpo").exists()


def test_a_job_whose_folder_is_not_under_artifact_root_jobs_is_refused(
    finished, tmp_path, django_capture_on_commit_callbacks
):
    job, out = finished()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    TrainingJob.objects.filter(pk=job.pk).update(config={**job.config, "output_dir": str(outside)})
    job.refresh_from_db()
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(ValidationError, match="ARTIFACT_ROOT"),
    ):
        job_delete(job=job)
    assert (outside / "keep.txt").is_file() and TrainingJob.objects.filter(pk=job.pk).exists()


def test_folder_usage_counts_a_hard_linked_file_once_and_stops_at_its_bound(finished):
    _, out = finished()
    usage = folder_usage([out])
    assert usage.complete and usage.bytes == 2 * (WEIGHTS + STATE) + 50 + len("succeeded\n") + len(
        '{"step": 1, "loss": 0.7}\n'
    )
    assert not folder_usage([out], limit=3).complete


# --- the views ---------------------------------------------------------------------------------------------


def _url(job, what):
    return f"/projects/{job.dataset_version.project_id}/jobs/{job.pk}/{what}"


def test_the_job_page_offers_a_manager_the_deletions_with_a_confirmation(finished, manager_client):
    job, _ = finished()
    html = manager_client.get(_url(job, "")).content.decode()
    assert 'id="delete-checkpoints-button"' in html and 'id="delete-job-button"' in html
    assert 'name="confirm" value="yes" required' in html and 'id="include-model"' in html


def test_a_manager_deletes_the_checkpoints_once_confirmed(
    finished, manager_client, django_capture_on_commit_callbacks
):
    job, out = finished()
    unconfirmed = manager_client.post(_url(job, "artifacts/delete/"))
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.content.decode()
    assert (out / "checkpoint-2").is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        done = manager_client.post(_url(job, "artifacts/delete/"), {"confirm": "yes"}, follow=True)
    assert done.status_code == 200 and "checkpoints deleted" in done.content.decode()
    assert not (out / "checkpoint-2").exists() and (out / "final").is_dir()


def test_a_refused_deletion_is_a_409_naming_why(finished, manager_client, version):
    job, out = finished()
    entry = ModelEntry.objects.get(produced_by=job)
    TrainingJob.objects.create(method="dpo", config={}, base_model=entry, dataset_version=version)
    page = manager_client.post(_url(job, "delete/"), {"confirm": "yes"})
    assert page.status_code == 409
    assert f"Model {entry.name} is still used by 1 training job" in page.content.decode()
    assert TrainingJob.objects.filter(pk=job.pk).exists() and (out / "final").is_dir()


def test_a_manager_deletes_a_job_and_lands_on_the_job_list(
    finished, manager_client, django_capture_on_commit_callbacks
):
    job, out = finished(registered=False)
    with django_capture_on_commit_callbacks(execute=True):
        page = manager_client.post(_url(job, "delete/"), {"confirm": "yes"})
    assert page.status_code == 302 and page["Location"] == f"/projects/{job.dataset_version.project_id}/jobs/"
    assert not TrainingJob.objects.filter(pk=job.pk).exists() and not out.exists()


def test_an_annotator_is_forbidden_and_an_outsider_sees_nothing(finished, client, project):
    job, out = finished()
    annotator = UserFactory(username="member")
    MembershipFactory(project=project, user=annotator, role="annotator")
    client.force_login(annotator)
    assert client.post(_url(job, "artifacts/delete/"), {"confirm": "yes"}).status_code == 403
    assert client.post(_url(job, "delete/"), {"confirm": "yes"}).status_code == 403
    assert 'id="delete-job-button"' not in client.get(_url(job, "")).content.decode()
    client.force_login(UserFactory(username="outsider"))
    assert client.post(_url(job, "artifacts/delete/"), {"confirm": "yes"}).status_code == 404
    assert client.post(_url(job, "delete/"), {"confirm": "yes"}).status_code == 404
    assert (out / "checkpoint-2").is_dir() and TrainingJob.objects.filter(pk=job.pk).exists()


def test_the_jobs_page_shows_the_disk_the_projects_jobs_use_and_forgets_it_after_a_deletion(
    finished, manager_client, django_capture_on_commit_callbacks
):
    job, out = finished()
    url = f"/projects/{job.dataset_version.project_id}/jobs/"
    before = manager_client.get(url).content.decode()
    assert 'id="disk-usage"' in before and "2.6\xa0KB" in before and "in 1 job folder" in before
    with django_capture_on_commit_callbacks(execute=True):
        job_artifacts_delete(job=job, include_model=True)
    assert "35\xa0bytes" in manager_client.get(url).content.decode()  # metrics.jsonl + log.txt


def test_the_launch_form_offers_keep_checkpoints_with_its_default_and_help(manager_client, project, version):
    html = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=dpo").content.decode()
    assert 'name="keep_checkpoints"' in html and 'value="2"' in html
    assert "Keep the newest K checkpoint folders" in html
