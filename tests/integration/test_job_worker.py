"""Real `celery worker` processes (the compose file's command) run tiny training jobs end to end.

The suite's broker is Redis when it runs here; one test sends through the embedded filesystem broker.
"""

import os
import signal

import pytest
from kombu import Connection

from jobs.models import JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running, wait_for
from tests.training_support import (
    dataset_version,
    launch_form_data,
    ranking_version,
    tiny_model_entry,
    tiny_params,
)
from training.models import Artifact, ArtifactKind, MetricPoint, ModelEntry, TrainingJob
from training.services import jobs
from training.services.jobs import training_job_launch
from training.services.paths import log_path
from training.tasks import training_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="trainer", is_staff=True)
    project = ProjectFactory()
    MembershipFactory(project=project, user=user, role="manager")
    return {"user": user, "version": dataset_version(project), "base": tiny_model_entry(tmp_path / "tiny")}


def _env(tmp_path, **extra):
    return native_env(
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TRAINING_HEARTBEAT_SECONDS="0.5",
        TRAINING_HEARTBEAT_STALE_SECONDS="8",
        JOB_RECOVERY_SECONDS="1",
        TRAINING_METRICS_FLUSH_SECONDS="0.2",
        **extra,
    )


def _state(job_id):
    return TrainingJob.objects.values_list("state", flat=True).get(pk=job_id)


def _finished(job_id):
    return lambda: _state(job_id) in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def _launch(setup, tmp_path, **overrides):
    return training_job_launch(
        params=tiny_params(tmp_path, **overrides),
        base_model=setup["base"],
        dataset_version=setup["version"],
        created_by=setup["user"],
    )


def _loss_steps(job):
    return list(
        MetricPoint.objects.filter(job=job, name="loss").order_by("step").values_list("step", flat=True)
    )


def test_worker_runs_a_job_end_to_end_on_the_suites_broker(setup, tmp_path, client):
    log = tmp_path / "worker.log"
    with running(compose_command("worker"), env=_env(tmp_path), log_path=log):
        job = _launch(setup, tmp_path)
        wait_for(_finished(job.pk), timeout=120, what="the worker to finish the job", log_path=log)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert _loss_steps(job) == [1, 2, 3, 4, 5, 6]
    checkpoints = Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT)
    # keep_checkpoints 2: the newest two
    assert sorted(a.path.rsplit("/", 1)[-1] for a in checkpoints) == ["checkpoint-4", "checkpoint-6"]
    assert ModelEntry.objects.filter(produced_by=job).exists()
    client.force_login(setup["user"])
    response = client.get(f"/api/jobs/{job.pk}/metrics?after=0")
    body = response.json()
    assert isinstance(body, dict), (response.status_code, body)
    assert [p[0] for p in body["points"]["loss"]] == [1, 2, 3, 4, 5, 6]
    page = client.get(f"/projects/{setup['version'].project_id}/jobs/{job.pk}/").content.decode()
    assert "Succeeded" in page and "checkpoint-6" in page


def test_worker_runs_a_job_sent_through_the_embedded_broker(setup, tmp_path, monkeypatch):
    var = tmp_path / "var"
    folder = var / "broker" / "queue"
    folder.mkdir(parents=True)
    control = var / "broker" / "control"
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
        "control_folder": str(control),
    }

    def send(job):
        with Connection("filesystem://", transport_options=options) as conn:
            training_run.apply_async(args=[job.pk], queue=job.queue, connection=conn)

    monkeypatch.setattr(jobs, "job_enqueue", send)
    env = _env(tmp_path, CELERY_BROKER_URL="filesystem://", PREFSTUDIO_VAR=str(var))
    log = tmp_path / "worker.log"
    with running(compose_command("worker"), env=env, log_path=log):
        job = _launch(setup, tmp_path)
        wait_for(_finished(job.pk), timeout=120, what="the worker to finish the job", log_path=log)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert _loss_steps(job) == [1, 2, 3, 4, 5, 6]
    # the worker keeps its exchange tables (its pidbox among them) under PREFSTUDIO_VAR, not in ./control
    assert {p.name for p in control.glob("*.exchange")} >= {"cpu.exchange", "celery.pidbox.exchange"}


@pytest.mark.slow
def test_killed_worker_job_resumes_from_its_checkpoint_on_a_new_worker(setup, tmp_path):
    job = _launch(setup, tmp_path, max_steps=60, epochs=1000, save_steps=5, eval_steps=None, batch_size=8)
    first, second = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    with running(compose_command("worker"), env=_env(tmp_path), log_path=first) as worker:
        wait_for(
            lambda: TrainingJob.objects.get(pk=job.pk).step >= 12,
            timeout=120,
            what="the job to pass its second checkpoint",
            log_path=first,
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    killed_at = TrainingJob.objects.get(pk=job.pk)
    assert killed_at.state == JobState.RUNNING and killed_at.step < 60
    with running(compose_command("worker"), env=_env(tmp_path), log_path=second):
        wait_for(_finished(job.pk), timeout=180, what="the new worker to resume and finish", log_path=second)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.attempts == 2
    assert _loss_steps(job) == list(range(1, 61))
    text = log_path(job).read_text()
    assert "attempt 2" in text and "resuming from checkpoint-" in text
    resumed_step = int(text.split("resuming from checkpoint-")[1].split()[0])
    assert 5 <= resumed_step < 60


def test_two_workers_and_a_duplicate_delivery_run_the_job_once(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    job = _launch(setup, tmp_path)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    env = _env(tmp_path)
    with (
        running(compose_command("worker"), env=env, log_path=logs[0]),
        running(compose_command("worker"), env=env, log_path=logs[1]),
    ):
        for _ in range(4):
            training_run.apply_async(args=[job.pk], queue="cpu")
        wait_for(_finished(job.pk), timeout=120, what="a worker to finish the job", log_path=logs[0])
        wait_for(
            lambda: _handled(logs) == 4,
            timeout=60,
            what="all four deliveries to be handled",
            log_path=logs[1],
        )
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.attempts == 1
    assert log_path(job).read_text().count("attempt ") == 1
    assert _loss_steps(job) == [1, 2, 3, 4, 5, 6]


def _handled(logs) -> int:
    """training_run deliveries the workers finished (a duplicate finishes at once, doing nothing)."""
    lines = [line for path in logs for line in path.read_text(errors="replace").splitlines()]
    return sum(1 for line in lines if "training.tasks.training_run[" in line and "succeeded in" in line)


def test_cancel_through_the_api_stops_a_running_job_and_keeps_its_checkpoint(setup, tmp_path, client):
    client.force_login(setup["user"])
    log = tmp_path / "worker.log"
    with running(compose_command("worker"), env=_env(tmp_path), log_path=log):
        job = _launch(setup, tmp_path, max_steps=2000, epochs=1000, save_steps=None, eval_steps=None)
        wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step >= 3, timeout=90, what="steps", log_path=log)
        assert client.post(f"/api/jobs/{job.pk}/cancel").json()["cancel_requested"] is True
        wait_for(_finished(job.pk), timeout=60, what="the job to stop", log_path=log)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and 3 <= job.step < 2000
    assert _loss_steps(job) == list(range(1, job.step + 1))
    checkpoint = Artifact.objects.get(job=job, kind=ArtifactKind.CHECKPOINT)
    assert checkpoint.path.endswith(f"checkpoint-{job.step}") and checkpoint.size > 0
    assert not ModelEntry.objects.filter(produced_by=job).exists()


def test_curry_dpo_launched_from_the_form_on_a_frozen_ranking_version_trains_on_a_worker(
    setup, tmp_path, client
):
    project = ProjectFactory()
    MembershipFactory(project=project, user=setup["user"], role="manager")
    version = ranking_version(project, setup["user"])
    assert {"rank_gap", "rating_gap"} <= set(version.examples.first().row)  # the pair export Curry reads
    client.force_login(setup["user"])
    url = f"/projects/{project.pk}/jobs/new/?method=curry_dpo"
    data = launch_form_data(
        client.get(url).context,
        setup["base"],
        version,
        action="launch",
        n_stages=2,
        batch_size=4,
        max_steps="",
        max_length=64,
        warmup_ratio=0.0,
    )
    log = tmp_path / "worker.log"
    with running(compose_command("worker"), env=_env(tmp_path), log_path=log):
        assert client.post(url, data).status_code == 302
        job = TrainingJob.objects.get(method="curry_dpo")
        wait_for(_finished(job.pk), timeout=120, what="the worker to finish the job", log_path=log)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    stages = dict(MetricPoint.objects.filter(job=job, name="curriculum/stage").values_list("step", "value"))
    assert sorted(stages) == list(range(1, job.step + 1)) == _loss_steps(job)  # every stage's points
    assert set(stages.values()) == {0.0, 1.0} and job.total_steps == job.step
    produced = ModelEntry.objects.get(produced_by=job)
    follow_up = training_job_launch(
        params=tiny_params(tmp_path), base_model=produced, dataset_version=version, created_by=setup["user"]
    )
    assert follow_up.config["model"] == f"local:{produced.path}"
