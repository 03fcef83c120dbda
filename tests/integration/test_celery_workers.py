"""A real `celery worker` process, started with the compose file's own command, runs imports.

The suite's broker is Redis when it answers on 127.0.0.1:6379 (the production configuration);
the embedded filesystem broker is covered end to end by tests/integration/test_make_run.py.
"""

import json
import os

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import ImportJob, Judgment
from annotation.services.import_jobs import import_job_confirm, import_job_create
from annotation.tasks import import_run
from jobs.models import JobState
from tests.conftest import service_reachable
from tests.factories import ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [
    {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad answer {i}."}
    for i in range(40)
]


def _upload(name="prefs.jsonl", rows=ROWS) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, "\n".join(json.dumps(r) for r in rows).encode(), "application/jsonl")


def _job_status(job_id: int) -> str:
    return ImportJob.objects.values_list("state", flat=True).get(pk=job_id)


def _finished(job_id: int):
    return lambda: _job_status(job_id) in {JobState.SUCCEEDED, JobState.FAILED}


def test_worker_service_command_imports_a_confirmed_upload(tmp_path):
    manager = UserFactory(is_staff=True)
    project = ProjectFactory()
    job = import_job_create(project=project, user=manager, upload=_upload())
    log_path = tmp_path / "worker.log"
    with running(compose_command("worker"), env=native_env(), log_path=log_path):
        assert import_job_confirm(job=job)
        wait_for(_finished(job.pk), timeout=90, what="the worker to finish the import", log_path=log_path)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.report
    assert project.items.count() == len(ROWS)
    assert Judgment.objects.filter(task__project=project, source="imported", choice="a").count() == len(ROWS)
    assert "import_run" in log_path.read_text()


def test_gpu_worker_command_consumes_only_the_gpu_queue(tmp_path):
    manager = UserFactory(is_staff=True)
    project = ProjectFactory()
    job = import_job_create(project=project, user=manager, upload=_upload())
    ImportJob.objects.filter(pk=job.pk).update(report={**job.report, "stage": "queued"})
    log_path = tmp_path / "worker-gpu.log"
    with running(compose_command("worker-gpu"), env=native_env(), log_path=log_path):
        import_run.apply_async(args=[job.pk], queue="gpu")
        wait_for(_finished(job.pk), timeout=90, what="the gpu worker to run the task", log_path=log_path)
    assert _job_status(job.pk) == JobState.SUCCEEDED
    assert "gpu" in log_path.read_text()


EMBEDDED_ONLY = os.environ.get("PREFSTUDIO_EMBEDDED_ONLY") == "1"
EMBEDDED_REASON = "PostgreSQL and Redis deliberately unused: PREFSTUDIO_EMBEDDED_ONLY=1"


@pytest.mark.skipif(EMBEDDED_ONLY, reason=EMBEDDED_REASON)
def test_redis_is_the_broker_when_it_runs_here():
    if not service_reachable("127.0.0.1", 6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379: the suite used the filesystem broker")
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "make test points Celery at the local Redis"


@pytest.mark.skipif(EMBEDDED_ONLY, reason=EMBEDDED_REASON)
def test_postgres_is_the_database_when_it_runs_here():
    if not service_reachable("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432: the suite used SQLite")
    from django.db import connection

    assert connection.vendor == "postgresql", "make test points Django at the local PostgreSQL"
