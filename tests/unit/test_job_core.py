"""The job core every background job shares: one vocabulary, one lease, one recovery for all kinds."""

import datetime as dt

import pytest
from django.apps import apps
from django.utils import timezone
from kombu.exceptions import OperationalError

from jobs.leases import job_claim
from jobs.models import Job, JobState
from jobs.recovery import lost_resend
from jobs.sending import job_send
from prefstudio.job_kinds import JOB_KINDS, recover_stale_jobs
from tests.job_support import requeue_stale
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import TrainingJob
from training.services import jobs
from training.services.jobs import TRAINING_JOBS, training_job_launch


def test_every_kind_of_job_is_recovered():
    concrete = {model for model in apps.get_models() if issubclass(model, Job)}
    assert concrete == {kind.model for kind in JOB_KINDS}
    assert len({kind.name for kind in JOB_KINDS}) == len(JOB_KINDS)


@pytest.fixture
def training_job(tmp_path, settings, project, manager, django_capture_on_commit_callbacks):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    with django_capture_on_commit_callbacks(execute=False):
        return training_job_launch(
            params=tiny_params(tmp_path),
            base_model=tiny_model_entry(tmp_path / "tiny"),
            dataset_version=dataset_version(project),
            created_by=manager,
        )


def test_a_training_job_whose_task_message_was_lost_is_sent_again(
    training_job, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(TRAINING_JOBS) == []
    assert not sent  # queued just now: its message is presumably on its way
    TrainingJob.objects.filter(pk=training_job.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert recover_stale_jobs()["training"] == []  # resent, not requeued
    assert len(sent) == 1
    training_job.refresh_from_db()
    assert training_job.state == JobState.QUEUED and training_job.heartbeat_at is not None


def test_an_undelivered_task_is_resent_soon_and_a_delivered_one_only_after_the_kinds_limit(
    training_job, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.JOB_UNDELIVERED_RESEND_SECONDS = 10
    sent = []

    def broker_down(job):
        raise OperationalError("Error 111 connecting to redis. Connection refused.")

    monkeypatch.setattr(jobs, "job_enqueue", broker_down)
    assert job_send(TRAINING_JOBS, training_job.pk) is False  # logged, never raised
    training_job.refresh_from_db()
    assert training_job.awaiting_broker and training_job.state_label == "Waiting for the broker"

    def age(**fields):
        ago = {name: timezone.now() - dt.timedelta(seconds=s) for name, s in fields.items()}
        TrainingJob.objects.filter(pk=training_job.pk).update(**ago)

    def resent() -> list[int]:
        with django_capture_on_commit_callbacks(execute=True):
            return lost_resend(TRAINING_JOBS)

    age(created_at=5)
    assert resent() == []  # younger than the short limit
    age(created_at=15)
    assert resent() == [training_job.pk]  # the broker still down: still undelivered
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: sent.append(job.pk))
    age(heartbeat_at=15)
    assert resent() == [training_job.pk] and sent == [training_job.pk]
    training_job.refresh_from_db()
    assert training_job.sent_at is not None and training_job.state_label == "Waiting for a worker"
    age(heartbeat_at=60)
    assert resent() == []  # delivered: it may be waiting behind other runs
    age(heartbeat_at=settings.TRAINING_QUEUED_RESEND_SECONDS + 60)
    assert resent() == [training_job.pk] and sent == [training_job.pk] * 2


def test_a_cancelled_request_is_never_claimed_or_resent(training_job, django_capture_on_commit_callbacks):
    TrainingJob.objects.filter(pk=training_job.pk).update(
        cancel_requested=True, created_at=timezone.now() - dt.timedelta(hours=1)
    )
    assert job_claim(TrainingJob, pk=training_job.pk, waiting=TRAINING_JOBS.waiting) is None
    with django_capture_on_commit_callbacks(execute=False) as sent:
        recover_stale_jobs()
    assert not sent


def test_a_lease_writes_only_while_its_attempt_owns_the_job(training_job):
    lease = job_claim(TrainingJob, pk=training_job.pk)
    assert lease.attempt == 1 and lease.write(step=2) and not lease.lost.is_set()
    TrainingJob.objects.filter(pk=training_job.pk).update(attempts=2)  # taken over by another attempt
    assert not lease.finish(JobState.SUCCEEDED)
    assert lease.lost.is_set()
    training_job.refresh_from_db()
    assert (training_job.state, training_job.step) == (JobState.RUNNING, 2)


def test_a_stale_job_whose_cancel_was_asked_for_ends_cancelled_not_queued(
    training_job, django_capture_on_commit_callbacks
):
    job_claim(TrainingJob, pk=training_job.pk)
    TrainingJob.objects.filter(pk=training_job.pk).update(
        cancel_requested=True, heartbeat_at=timezone.now() - dt.timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(TRAINING_JOBS) == []
    training_job.refresh_from_db()
    assert training_job.state == JobState.CANCELLED and training_job.finished_at and not sent


def test_a_finished_attempt_ends_its_lease_without_counting_it_lost(training_job):
    lease = job_claim(TrainingJob, pk=training_job.pk)
    assert lease.finish(JobState.SUCCEEDED)
    assert not lease.write() and not lease.lost.is_set() and lease.done.is_set()
