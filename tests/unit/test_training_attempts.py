"""A training attempt's hold on its files and its outcome: fenced writes after a takeover, artifacts
recorded as written and published with the final state, and torch's threads set per job."""

from pathlib import Path

import pytest
import torch
from django.db import connection
from django.db.models import F

from jobs.leases import Lease
from jobs.models import JobState
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.engine.runtime import loop
from training.models import Artifact, ArtifactKind, TrainingJob
from training.services import metrics
from training.services.jobs import training_job_cancel, training_job_launch
from training.services.runner import training_job_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2
    settings.TRAINING_CANCEL_CHECK_SHARE = 1.0


@pytest.fixture
def launch(project, manager, tmp_path):
    base, version = tiny_model_entry(tmp_path / "tiny"), dataset_version(project)

    def launch(**overrides):
        return training_job_launch(
            params=tiny_params(tmp_path, **overrides),
            base_model=base,
            dataset_version=version,
            created_by=manager,
        )

    return launch


def test_an_attempt_taken_over_in_the_middle_of_a_step_writes_no_file_after_it(launch, monkeypatch):
    job = launch(eval_steps=None)
    real_step = loop._train_step

    def step_then_taken_over(run_, micro_batches, params, step):
        out = real_step(run_, micro_batches, params, step)
        if step == 4:  # the worker was paused here; meanwhile the job was requeued and claimed again
            TrainingJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1)
        return out

    monkeypatch.setattr(loop, "_train_step", step_then_taken_over)
    assert training_job_run(job_id=job.pk) is None
    out = Path(job.config["output_dir"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines] == [1, 2, 3]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not list(out.glob(".*.tmp"))
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.attempts == 2  # left to the attempt that owns it


def _outcome_watch(monkeypatch, job) -> list:
    seen = []
    real_finish = Lease.finish

    def finish(self, state, **fields):
        kinds = sorted(Artifact.objects.filter(job=job).values_list("kind", flat=True))
        seen.append((state, connection.in_atomic_block, kinds))
        return real_finish(self, state, **fields)

    monkeypatch.setattr(Lease, "finish", finish)
    return seen


def test_a_succeeded_job_is_published_with_its_whole_artifact_list_in_one_transaction(launch, monkeypatch):
    job = launch(eval_steps=None)
    seen = _outcome_watch(monkeypatch, job)
    opened = []
    real_open = Path.open

    def counting_open(self, mode="r", *args, **kwargs):
        if self.name == "model.safetensors" and "r" in mode and "b" in mode:
            opened.append(self.stat().st_ino)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    state, atomic, kinds = seen[-1]
    assert state == JobState.SUCCEEDED and atomic  # the state commits with the artifact rows
    assert {ArtifactKind.CHECKPOINT, ArtifactKind.MODEL, ArtifactKind.METRICS, ArtifactKind.CONFIG} <= set(
        kinds
    )
    assert len(opened) == len(set(opened)) == 3  # checkpoints 2, 4, 6 hashed once; final/ links checkpoint-6


def test_a_cancelled_job_is_published_with_its_last_checkpoint(launch, monkeypatch):
    job = launch(max_steps=20, save_steps=None, eval_steps=None)
    seen = _outcome_watch(monkeypatch, job)
    real_log = metrics.DbMetrics.log

    def log_and_cancel(self, values, step):
        real_log(self, values, step)
        if step == 3 and "loss" in values:
            training_job_cancel(job=TrainingJob.objects.get(pk=job.pk))

    monkeypatch.setattr(metrics.DbMetrics, "log", log_and_cancel)
    assert training_job_run(job_id=job.pk) == JobState.CANCELLED
    state, atomic, kinds = seen[-1]
    assert state == JobState.CANCELLED and atomic and ArtifactKind.CHECKPOINT in kinds


def test_each_job_sets_torchs_threads_from_its_setting(launch, monkeypatch, settings):
    settings.TRAINING_TORCH_THREADS = 1
    job = launch(max_steps=2, eval_steps=None)
    threads = []
    real_log = metrics.DbMetrics.log

    def log(self, values, step):
        threads.append(torch.get_num_threads())
        real_log(self, values, step)

    monkeypatch.setattr(metrics.DbMetrics, "log", log)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    finally:
        torch.set_num_threads(before)
    assert threads and set(threads) == {1}
    assert "torch uses 1 CPU thread" in (Path(job.config["output_dir"]) / "log.txt").read_text()


def test_the_automatic_thread_count_shares_the_cores_among_the_workers_jobs(settings, monkeypatch):
    from training.services import threads

    settings.TRAINING_TORCH_THREADS = 0
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_worker_slots", 1)
    assert threads.torch_threads() == 4
    threads.worker_slots_set(2)
    assert threads.torch_threads() == 2
    threads.worker_slots_set(8)
    assert threads.torch_threads() == 1
