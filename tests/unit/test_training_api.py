"""/api/jobs (create, list, get, metrics after a step, cancel) and `manage.py launch_job`."""

import pytest
import yaml
from django.core.management import CommandError, call_command

from jobs.models import JobState
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import TrainingJob
from training.services.metrics import metrics_write_batch


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture
def base_model(db, tmp_path):
    return tiny_model_entry(tmp_path / "tiny")


@pytest.fixture
def version(project):
    return dataset_version(project)


def _create(client, version, base_model, config):
    return client.post(
        "/api/jobs",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "queue": "cpu", "config": config},
        content_type="application/json",
    )


def test_api_creates_lists_gets_and_cancels_a_job(manager_client, project, version, base_model, tmp_path):
    created = _create(manager_client, version, base_model, tiny_params(tmp_path))
    assert created.status_code == 202, created.content
    job_id = created.json()["id"]
    assert created.json()["state"] == "queued" and created.json()["config"]["max_steps"] == 6
    listed = manager_client.get("/api/jobs", {"project_id": project.pk}).json()
    assert [j["id"] for j in listed] == [job_id]
    assert manager_client.get(f"/api/jobs/{job_id}").json()["dataset_version_id"] == version.pk
    history = [
        {"stage": "loading", "attempt": 1, "started": "2026-12-03T12:00:00+00:00", "done": 0, "total": 0}
    ]
    TrainingJob.objects.filter(pk=job_id).update(
        state=JobState.RUNNING, stage="loading", stage_history=history
    )
    running = manager_client.get(f"/api/jobs/{job_id}").json()
    assert running["stage"] == "loading the model"
    assert [(s["label"], s["attempt"], s["current"]) for s in running["stages"]] == [
        ("loading the model", 1, True)
    ]
    TrainingJob.objects.filter(pk=job_id).update(state=JobState.QUEUED)
    cancelled = manager_client.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


def test_api_rejects_an_invalid_config_with_the_field_named(manager_client, version, base_model, tmp_path):
    response = _create(manager_client, version, base_model, tiny_params(tmp_path, warmup_ratio=1.5))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "warmup_ratio"]
    assert not TrainingJob.objects.exists()


def test_api_metrics_after_a_step(manager_client, version, base_model, tmp_path):
    job_id = _create(manager_client, version, base_model, tiny_params(tmp_path)).json()["id"]
    metrics_write_batch(job_id=job_id, points=[(s, "loss", 1.0 / s, float(s)) for s in range(1, 6)])
    body = manager_client.get(f"/api/jobs/{job_id}/metrics", {"after": 3}).json()
    assert body["points"] == {"loss": [[4, 0.25, 4.0], [5, 0.2, 5.0]]} and body["cursor"] == 5
    page = manager_client.get(f"/api/jobs/{job_id}/metrics", {"after": 0, "limit": 2}).json()
    assert page["cursor"] == 2 and page["more"] is True


def test_api_annotators_cannot_launch(annotator_client, version, base_model, tmp_path):
    assert _create(annotator_client, version, base_model, tiny_params(tmp_path)).status_code == 403


def test_launch_job_command_queues_a_yaml_config(version, base_model, tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**tiny_params(tmp_path), "model": f"local:{base_model.path}"}))
    call_command("launch_job", str(path), "--dataset-version", str(version.pk))
    job = TrainingJob.objects.get()
    assert job.base_model == base_model and job.state == JobState.QUEUED
    assert f"queued job {job.pk}" in capsys.readouterr().out


def test_launch_job_command_reports_an_invalid_field(version, base_model, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"method": "dpo", "beta": "high"}))
    with pytest.raises(CommandError, match="beta"):
        call_command(
            "launch_job", str(path), "--dataset-version", str(version.pk), "--base-model", base_model.name
        )


def test_launch_enqueues_on_the_jobs_queue_after_commit(
    version, base_model, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from training.services.jobs import training_job_launch
    from training.tasks import training_run

    sent = []
    monkeypatch.setattr(training_run, "apply_async", lambda **kw: sent.append(kw))
    with django_capture_on_commit_callbacks(execute=True):
        job = training_job_launch(
            params=tiny_params(tmp_path), base_model=base_model, dataset_version=version, queue="gpu"
        )
        assert sent == []
    assert sent == [{"args": [job.pk], "queue": "gpu"}]


def test_register_model_command_adds_a_local_folder_and_rejects_a_non_model(base_model, tmp_path, capsys):
    call_command("register_model", "copy-of-tiny", base_model.path)
    assert "local:" in capsys.readouterr().out
    with pytest.raises(CommandError, match="config.json"):
        call_command("register_model", "nothing", str(tmp_path))


def test_openapi_schema_documents_the_jobs_routes(manager_client):
    paths = manager_client.get("/api/openapi.json").json()["paths"]
    assert {
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/metrics",
        "/api/jobs/{job_id}/cancel",
    } <= set(paths)


@pytest.mark.django_db(transaction=True)
def test_launch_job_command_waits_for_the_outcome(tmp_path, celery_eager, capsys, settings):
    from tests.factories import ProjectFactory

    settings.TRAINING_HEARTBEAT_SECONDS = 0.2
    version = dataset_version(ProjectFactory())
    base = tiny_model_entry(tmp_path / "tiny-wait")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_params(tmp_path, max_steps=2, eval_steps=None)))
    call_command(
        "launch_job",
        str(path),
        "--dataset-version",
        str(version.pk),
        "--base-model",
        str(base.pk),
        "--wait",
        "--poll",
        "0.1",
    )
    out = capsys.readouterr().out
    assert "succeeded step 2/2" in out
    assert TrainingJob.objects.get().state == JobState.SUCCEEDED
