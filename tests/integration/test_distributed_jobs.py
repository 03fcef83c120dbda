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

from jobs.models import FINISHED_STATES, JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running, wait_for
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import Artifact, ArtifactKind, MetricPoint, ModelEntry, TrainingJob
from training.services import jobs
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
    checkpoints = Artifact.objects.filter(job=double, kind=ArtifactKind.CHECKPOINT)
    assert sorted(a.path.rsplit("/", 1)[1] for a in checkpoints) == ["checkpoint-4", "checkpoint-5"]  # keep 2
    assert ModelEntry.objects.filter(produced_by=double).exists()
    assert double.step == 5 and double.total_steps == 5  # 24 rows in batches of 5
    text = log_path(double).read_text()
    assert "engine: 2 processes: -m training.engine.launch --nproc-per-node=2 --standalone" in text
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


def test_a_rank_killed_mid_run_requeues_the_job_which_resumes_with_continuous_metrics(
    setup, tmp_path, monkeypatch
):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)  # this test is the next worker
    job = _launch(setup, tmp_path, processes_per_node=2, max_steps=60, epochs=1000, save_steps=3)
    with _attempt_running(job, steps=5) as outcome:
        ranks = _rank_pids(job)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
    assert outcome["state"] == JobState.QUEUED and time.monotonic() - killed < 120  # no hang
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.attempts == 1
    resumed_at = int(job.resume_from.rsplit("-", 1)[1])
    assert resumed_at % 3 == 0 and 3 <= resumed_at < 60
    assert "rank 1 was killed by SIGKILL; queued again for attempt 2" in log_path(job).read_text()
    assert not _engine_processes(job)

    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED, TrainingJob.objects.get(pk=job.pk).error
    job.refresh_from_db()
    assert job.attempts == 2 and job.step == 60
    assert [s for s, _ in _points(job, "loss")] == list(range(1, 61))  # every step once, none lost
    assert "resuming from checkpoint-" in log_path(job).read_text()
    assert ModelEntry.objects.filter(produced_by=job).exists()


def test_a_rank_that_dies_in_the_last_attempt_fails_the_job_with_its_message(setup, tmp_path, settings):
    settings.TRAINING_MAX_ATTEMPTS = 1
    job = _launch(setup, tmp_path, processes_per_node=2, max_steps=5000, epochs=1000, save_steps=2)
    with _attempt_running(job, steps=3) as outcome:
        os.kill(_rank_pids(job)[1], signal.SIGKILL)
    assert outcome["state"] == JobState.FAILED
    job.refresh_from_db()
    assert "rank 1 was killed by SIGKILL" in job.error, job.error
    assert Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT).exists()  # kept: a clone resumes
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


def test_a_method_that_trains_in_one_process_only_is_refused_naming_the_field(setup, tmp_path, monkeypatch):
    from training.engine.recipes.fast_slow_dpo import FastSlowDPORecipe

    monkeypatch.setattr(FastSlowDPORecipe, "supports_distributed", False)  # every built-in recipe has it
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, method="fast_slow_dpo", processes_per_node=2)
    assert list(refused.value.message_dict) == ["processes_per_node"]
    assert "fast_slow_dpo trains in one process only" in refused.value.message_dict["processes_per_node"][0]
    monkeypatch.undo()
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, method="fast_slow_dpo", processes_per_node=2, strategy="fsdp")
    assert "fast_slow_dpo does not shard with FSDP yet" in refused.value.message_dict["strategy"][0]
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, processes_per_node=0)
    assert list(refused.value.message_dict) == ["processes_per_node"]
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, strategy="fsdp")
    assert "fsdp shards the model across processes" in refused.value.message_dict["strategy"][0]
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, strategy="zero", processes_per_node=2)
    assert "ddp or fsdp" in refused.value.message_dict["strategy"][0]
    assert not TrainingJob.objects.exists()


def _one_slot_worker(name: str) -> list[str]:
    """The compose file's worker command with one job at a time, under its own node name."""
    command = compose_command("worker")
    command[command.index("--concurrency") + 1] = "1"
    return [*command, "-n", f"{name}@%h"]


def _node_env(tmp_path, **extra):
    return native_env(
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TRAINING_HEARTBEAT_SECONDS="0.5",
        TRAINING_METRICS_FLUSH_SECONDS="0.2",
        TRAINING_TORCH_THREADS="1",
        TRAINING_NODE_ADDRESS="127.0.0.1",
        TRAINING_SHARED_STORAGE="true",
        **extra,
    )


def _log_times(job, *needles: str) -> list[float]:
    """When the job log first says each of ``needles`` (seconds since the log began)."""
    lines = log_path(job).read_text().splitlines()
    stamps = [
        time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) for line in lines if line[:2] == "20"
    ]
    first = stamps[0]
    found = []
    for needle in needles:
        line = next(line for line in lines if needle in line and line[:2] == "20")
        found.append(time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) - first)
    return found


def test_two_workers_meet_as_two_nodes_and_the_metrics_reach_the_job_once(setup, tmp_path, settings):
    settings.TRAINING_SHARED_STORAGE = True
    logs = [tmp_path / "node-a.log", tmp_path / "node-b.log"]
    env = _node_env(tmp_path)
    with (
        running(_one_slot_worker("node-a"), env=env, log_path=logs[0]),
        running(_one_slot_worker("node-b"), env=env, log_path=logs[1]),
    ):
        job = _launch(setup, tmp_path, nodes=2)
        wait_for(
            lambda: TrainingJob.objects.get(pk=job.pk).state in FINISHED_STATES,
            timeout=300,
            what="the two-node job to finish",
            log_path=logs[0],
        )
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, (job.error, log_path(job).read_text()[-3000:])
        wait_for(lambda: not _engine_processes(job), timeout=30, what="both nodes' processes to end")
    assert [s for s, _ in _points(job, "loss")] == [1, 2, 3, 4, 5]  # once, though two nodes trained
    assert {v for _, v in _points(job, "dist/world_size")} == {2.0}
    assert ModelEntry.objects.filter(produced_by=job).exists()
    text = log_path(job).read_text()
    assert "on each of 2 nodes, meeting at 127.0.0.1:" in text and f"joining job-{job.pk}-attempt-1" in text
    launched, joined, first_step = _log_times(job, "engine: ", "joining job-", "step 1:")
    assert launched <= joined <= first_step
    print(
        f"two-node timeline: launched {launched:.0f} s, node joined {joined:.0f} s, step 1 {first_step:.0f} s"
    )


def test_a_two_node_job_without_a_second_free_worker_fails_at_the_rendezvous_timeout(
    setup, tmp_path, settings
):
    settings.TRAINING_SHARED_STORAGE = True
    log = tmp_path / "worker.log"
    env = _node_env(tmp_path, TRAINING_RENDEZVOUS_TIMEOUT_SECONDS="20")
    with running(_one_slot_worker("alone"), env=env, log_path=log):
        job = _launch(setup, tmp_path, nodes=2)
        wait_for(
            lambda: TrainingJob.objects.get(pk=job.pk).state in FINISHED_STATES,
            timeout=180,
            what="the job to give up waiting",
            log_path=log,
        )
        job.refresh_from_db()
        # the node task ran once the worker was free again, found its attempt over and did nothing
        wait_for(
            lambda: "succeeded in" in log.read_text().split("training_node_run")[-1], timeout=60, log_path=log
        )
    assert job.state == JobState.FAILED
    assert "not all 2 nodes joined within 20 s (rendezvous timeout)" in job.error, job.error
    assert not _engine_processes(job)


def test_a_job_on_two_nodes_needs_storage_declared_shared(setup, tmp_path, settings):
    settings.TRAINING_SHARED_STORAGE = False
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path, nodes=2)
    assert "TRAINING_SHARED_STORAGE=true" in refused.value.message_dict["nodes"][0]
