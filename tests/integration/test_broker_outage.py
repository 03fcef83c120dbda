"""A broker outage costs a delay, never a job: each case stops a Redis of the test's own (``OwnRedis``), acts
while it is down, starts it again and checks the job runs exactly once on a real worker.

The test process sends through the same Redis as the worker (the Celery app is pointed at it), so every
send below is a real publish to a broker that is really down.
"""

import os
import signal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from annotation.models import DatasetVersion, FreezeJob, ImportJob, Item, Judgment, JudgmentSource
from jobs.models import JobState
from prefstudio.job_kinds import recover_stale_jobs
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task
from tests.integration.native import OwnRedis, compose_command, native_env, running, wait_for
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from tests.unit.import_samples import jsonl_bytes, trl_rows
from training.models import MetricPoint, TrainingJob
from training.services.jobs import training_job_launch

pytestmark = pytest.mark.django_db(transaction=True)


def _point_celery_at(url: str) -> None:
    from prefstudio.celery import app

    app.conf.update(broker_url=url, broker_read_url=url, broker_write_url=url)
    app._pool = None  # noqa: SLF001 - the connection and producer pools are made for one URL (kombu
    app.amqp._producer_pool = None  # noqa: SLF001 - keeps one pool per URL, so the suite's stays open)


@pytest.fixture
def redis(tmp_path, settings):
    """This test's broker, for the test process and the workers it starts."""
    own = OwnRedis(tmp_path / "redis")
    own.start()
    previous = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = own.url
    settings.JOB_UNDELIVERED_RESEND_SECONDS = 1
    _point_celery_at(own.url)
    yield own
    _point_celery_at(previous)
    own.stop()


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="trainer", is_staff=True)
    project = ProjectFactory()
    MembershipFactory(project=project, user=user, role="manager")
    return {"user": user, "project": project, "base": tiny_model_entry(tmp_path / "tiny")}


def _worker_env(tmp_path):
    return native_env(
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TRAINING_HEARTBEAT_SECONDS="0.5",
        JOB_RECOVERY_SECONDS="1",
        JOB_UNDELIVERED_RESEND_SECONDS="1",
        TRAINING_METRICS_FLUSH_SECONDS="0.2",
    )


def _state(model, pk):
    return model.objects.values_list("state", flat=True).get(pk=pk)


def _run_on_a_worker(job, log, tmp_path) -> None:
    """Start a worker (whose recovery resends what the broker never took) and wait for ``job`` to end."""
    with running(compose_command("worker"), env=_worker_env(tmp_path), log_path=log):
        wait_for(
            lambda: _state(TrainingJob, job.pk) in {JobState.SUCCEEDED, JobState.FAILED},
            timeout=180,
            what="the job to be sent again and finish",
            log_path=log,
        )


def _loss_steps(job):
    return list(
        MetricPoint.objects.filter(job=job, name="loss").order_by("step").values_list("step", flat=True)
    )


def test_a_job_launched_while_the_broker_is_down_is_accepted_and_runs_once_it_returns(
    redis, setup, tmp_path, client
):
    version = dataset_version(setup["project"])
    client.force_login(setup["user"])
    redis.stop()
    body = {"dataset_version_id": version.pk, "base_model_id": setup["base"].pk, "queue": "cpu"}
    response = client.post(
        "/api/jobs", {**body, "config": tiny_params(tmp_path)}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "queued" and response.json()["waiting_for_broker"] is True
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.sent_at is None
    page = client.get(reverse("job-detail", args=[setup["project"].pk, job.pk])).content.decode()
    assert "Waiting for the broker" in page

    redis.start()
    _run_on_a_worker(job, tmp_path / "worker.log", tmp_path)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.attempts == 1 and job.sent_at is not None
    assert _loss_steps(job) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_job_whose_worker_dies_during_an_outage_is_requeued_and_resumes_once_it_returns(
    redis, setup, tmp_path, settings
):
    params = tiny_params(tmp_path, max_steps=20, epochs=1000, save_steps=5, eval_steps=None, batch_size=8)
    job = training_job_launch(
        params=params,
        base_model=setup["base"],
        dataset_version=dataset_version(setup["project"]),
        created_by=setup["user"],
    )
    first, second = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    with running(compose_command("worker"), env=_worker_env(tmp_path), log_path=first) as worker:
        wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step >= 6, timeout=120, what="a checkpoint")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    redis.stop()
    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert recover_stale_jobs()["training"] == [job.pk]  # as beat would, while the broker is down
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.awaiting_broker

    redis.start()
    _run_on_a_worker(job, second, tmp_path)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.attempts == 2
    assert _loss_steps(job) == list(range(1, 21))


def test_freeze_and_import_asked_for_during_an_outage_wait_and_then_run_once(redis, setup, tmp_path, client):
    project = setup["project"]
    client.force_login(setup["user"])
    upload = client.post(
        reverse("import-upload", args=[project.pk]),
        {"file": SimpleUploadedFile("prefs.jsonl", jsonl_bytes(trl_rows(6)))},
    )
    assert upload.status_code == 302
    imported = ImportJob.objects.get(project=project)

    redis.stop()
    confirmed = client.post(reverse("import-confirm", args=[project.pk, imported.pk]))
    assert confirmed.status_code == 302
    page = client.get(reverse("import-detail", args=[project.pk, imported.pk])).content.decode()
    assert "Waiting for the broker" in page
    for i in range(3):  # judged tasks the freeze can use whether it runs before or after the import
        task = pair_task(project, prompt=f"Frozen {i}")
        Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, choice="a")
    form = {"min_votes": 1, "min_agreement": 0.5, "seed": 0, "test_fraction": 0.0}
    first = client.post(reverse("version-freeze", args=[project.pk]), form)
    again = client.post(reverse("version-freeze", args=[project.pk]), form)  # the user retries
    assert first.status_code == again.status_code == 302 and first["Location"] == again["Location"]
    assert FreezeJob.objects.count() == 1 and FreezeJob.objects.get().awaiting_broker
    assert "Waiting for the broker" in client.get(first["Location"]).content.decode()

    redis.start()
    log = tmp_path / "worker.log"
    with running(compose_command("worker"), env=_worker_env(tmp_path), log_path=log):
        wait_for(
            lambda: _state(ImportJob, imported.pk) == JobState.SUCCEEDED and FreezeJob.objects.get().finished,
            timeout=90,
            what="the import and the freeze to be resent and run",
            log_path=log,
        )
    assert Item.objects.filter(project=project, source="prefs.jsonl").count() == 6
    freeze = FreezeJob.objects.get()
    assert freeze.state == JobState.SUCCEEDED, freeze.error
    assert DatasetVersion.objects.filter(project=project).count() == 1
    assert freeze.attempts == 1 and ImportJob.objects.get(pk=imported.pk).attempts == 1
