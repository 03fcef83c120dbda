"""A job with two training processes: the worker's task runs ``torchrun --nproc-per-node 2`` as a child,
streams rank 0's metrics into the job once (equal to a one-process job's to 1e-5), records its
checkpoints and model, relays a cancel to both processes, fails with the child's own error when a rank
dies (within a bounded time, not a hang), and a worker killed with SIGKILL leaves no training process."""

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connections

from jobs.models import JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running, wait_for
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import Artifact, ArtifactKind, MetricPoint, ModelEntry, TrainingJob
from training.services.jobs import training_job_cancel, training_job_launch
from training.services.paths import log_path
from training.services.runner import training_job_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_METRICS_FLUSH_SECONDS = 0.2
    settings.TRAINING_TORCH_THREADS = 2
    user = UserFactory(username="trainer", is_staff=True)
    project = ProjectFactory()
    MembershipFactory(project=project, user=user, role="manager")
    return {"user": user, "version": dataset_version(project), "base": tiny_model_entry(tmp_path / "tiny")}


def _launch(setup, tmp_path, **overrides) -> TrainingJob:
    params = tiny_params(tmp_path, batch_size=5, device="cpu", **overrides)
    return training_job_launch(
        params=params, base_model=setup["base"], dataset_version=setup["version"], created_by=setup["user"]
    )


def _points(job, name: str) -> list[tuple[int, float]]:
    rows = MetricPoint.objects.filter(job=job, name=name).order_by("step")
    return list(rows.values_list("step", "value"))


def _engine_processes(job) -> list[int]:
    """PIDs whose command line names this job's output folder (the engine and its launcher)."""
    out = job.config["output_dir"]
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if out in cmdline:
                pids.append(int(entry.name))
    return pids


def _run_in_thread(job, outcome: dict) -> None:
    try:
        outcome["state"] = training_job_run(job_id=job.pk)
    finally:
        connections.close_all()  # this thread's own connection, before the test database is dropped


@contextmanager
def _attempt_running(job, *, steps: int):
    """The job's attempt on a thread (as a worker runs it), once it has done ``steps`` steps; yields the
    dict its final state lands in, and waits for the attempt on leaving (cancelling it if it still runs)."""
    outcome = {}
    worker = threading.Thread(target=_run_in_thread, args=(job, outcome))
    worker.start()
    try:
        wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step >= steps, timeout=120, what=f"{steps} steps")
        yield outcome
        worker.join(timeout=120)
    finally:
        if worker.is_alive():
            TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
            worker.join(timeout=60)


def test_a_two_process_job_trains_like_a_one_process_job_and_is_recorded_once(setup, tmp_path):
    single = _launch(setup, tmp_path)
    assert training_job_run(job_id=single.pk) == JobState.SUCCEEDED
    double = _launch(setup, tmp_path, processes_per_node=2)
    assert training_job_run(job_id=double.pk) == JobState.SUCCEEDED, TrainingJob.objects.get(
        pk=double.pk
    ).error
    double.refresh_from_db()
    one, two = _points(single, "loss"), _points(double, "loss")
    assert [s for s, _ in two] == [s for s, _ in one] == [1, 2, 3, 4, 5]  # each once: rank 0 reports
    for (_, a), (_, b) in zip(one, two, strict=True):
        assert b == pytest.approx(a, abs=1e-5)
    assert {v for _, v in _points(double, "dist/world_size")} == {2.0}
    assert Artifact.objects.filter(job=double, kind=ArtifactKind.CHECKPOINT).count() == 3
    assert ModelEntry.objects.filter(produced_by=double).exists()
    assert double.step == 5 and double.total_steps == 5  # 24 rows in batches of 5
    text = log_path(double).read_text()
    assert "engine: 2 processes" in text and "training.engine.launch --standalone" in text
    assert not _engine_processes(double)


def test_cancel_reaches_both_processes_and_keeps_the_checkpoint(setup, tmp_path):
    job = _launch(setup, tmp_path, processes_per_node=2, max_steps=5000, epochs=1000, save_steps=None)
    with _attempt_running(job, steps=2) as outcome:
        assert len(_engine_processes(job)) >= 3  # torchrun and its two ranks
        training_job_cancel(job=job)
        asked = time.monotonic()
    assert outcome["state"] == JobState.CANCELLED and time.monotonic() - asked < 60
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and 2 <= job.step < 5000
    assert [s for s, _ in _points(job, "loss")] == list(range(1, job.step + 1))
    checkpoint = Artifact.objects.get(job=job, kind=ArtifactKind.CHECKPOINT)
    assert checkpoint.path.endswith(f"checkpoint-{job.step}")
    assert not _engine_processes(job)


def _rank_pids(job) -> dict[int, int]:
    """The engine's rank processes (torchrun's children, each running training.engine), by rank."""
    ranks = {}
    for pid in _engine_processes(job):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"LOCAL_RANK=")]
        if rank:
            ranks[int(rank[0])] = pid
    return ranks


def test_a_rank_that_dies_fails_the_job_with_a_message_not_a_hang(setup, tmp_path):
    job = _launch(setup, tmp_path, processes_per_node=2, max_steps=5000, epochs=1000, save_steps=2)
    with _attempt_running(job, steps=3) as outcome:
        ranks = _rank_pids(job)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
    assert outcome["state"] == JobState.FAILED and time.monotonic() - killed < 120
    job.refresh_from_db()
    assert "rank 1 was killed by SIGKILL" in job.error, job.error
    assert Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT).exists()  # kept to resume from
    assert not _engine_processes(job)


def test_a_worker_killed_with_sigkill_leaves_no_training_process(setup, tmp_path):
    env = native_env(
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TRAINING_HEARTBEAT_SECONDS="0.5",
        TRAINING_METRICS_FLUSH_SECONDS="0.2",
        TRAINING_TORCH_THREADS="2",
    )
    log = tmp_path / "worker.log"
    with running(compose_command("worker"), env=env, log_path=log) as worker:
        job = _launch(setup, tmp_path, processes_per_node=2, max_steps=5000, epochs=1000, save_steps=None)
        wait_for(
            lambda: TrainingJob.objects.get(pk=job.pk).step >= 2, timeout=180, what="two steps", log_path=log
        )
        assert len(_engine_processes(job)) >= 3
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    wait_for(lambda: not _engine_processes(job), timeout=15, what="the training processes to end")


def test_a_method_that_trains_in_one_process_only_is_refused_naming_the_field(setup, tmp_path):
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, method="fast_slow_dpo", processes_per_node=2)
    assert list(refused.value.message_dict) == ["processes_per_node"]
    assert "fast_slow_dpo trains in one process only" in refused.value.message_dict["processes_per_node"][0]
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, processes_per_node=0)
    assert list(refused.value.message_dict) == ["processes_per_node"]
    assert not TrainingJob.objects.exists()
