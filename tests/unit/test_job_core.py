"""The job core every background job shares: one vocabulary, one lease, one recovery for all kinds."""

import datetime as dt

import pytest
from django.apps import apps
from django.utils import timezone

from jobs.leases import job_claim
from jobs.models import Job, JobState
from prefstudio.job_kinds import JOB_KINDS, recover_stale_jobs
from tests.job_support import requeue_stale
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import TrainingJob
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
