"""A training attempt whose engine runs as a child process: ``torchrun`` starting N processes on this node.

The Celery task stays the job's owner: it holds the lease and heartbeat (``attempt.py``), and while the
child runs it polls every CHILD_POLL_SECONDS to

- stream the new lines of the child's ``metrics.jsonl`` (rank 0 writes one line per step) into the
  attempt's metric buffer, so the job page plots them as they appear;
- record every checkpoint, sample folder and ``final/`` the child has put in place as an artifact;
- relay a cancel: once the job's cancel flag is set it creates the child's cancel file, which every rank
  reads before each step (they agree, save a checkpoint and exit);
- stop the child's whole process group when the lease is lost (another attempt owns the job now).

The child's output goes to the job's log.  It ends with ``result.json`` (how the run ended) or a non-zero
exit, whose last error line becomes the job's error.  The child asks Linux to SIGKILL it when its parent
ends (``training.engine.launch``, which then runs torchrun), and so does every rank
(``--die-with-parent``): a worker killed with SIGKILL leaves no training processes behind, and the
recovery resumes the job from its last checkpoint on the next attempt.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from django.conf import settings

from training.engine.runtime.loop import FINAL, SAMPLES, TrainResult
from training.engine.supervision import RESULT_FILE

from .attempt import AttemptWatch
from .joblog import JobLog
from .paths import log_path
from .threads import torch_threads

CHILD_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 20
LAUNCH_FILE = "launch.yaml"
CANCEL_FILE = "cancel"
ERROR_LINE = re.compile(r"^(?:\[rank\d+\]: )?(?:[\w.]+(?:Error|Exception)|training stopped): .+")


class ChildFailedError(RuntimeError):
    """The engine's process ended without a result; the message is its own last error line.  ``lost``:
    a process was killed by a signal (the OOM killer, a node going away) rather than failing on its own,
    so another attempt from the last checkpoint may well succeed."""

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


def child_processes(config: dict) -> int:
    """Training processes a job's config asks for on one node (1: no torchrun)."""
    return int(config.get("processes_per_node") or 1)


def child_nodes(config: dict) -> int:
    """Nodes a job's config asks for (1: this worker's machine alone)."""
    return int(config.get("nodes") or 1)


def runs_as_child(config: dict) -> bool:
    """Whether an attempt runs the engine as a child process (more than one process, or node)."""
    return child_processes(config) > 1 or child_nodes(config) > 1


@dataclass(frozen=True)
class Rendezvous:
    """Where a multi-node job's nodes meet (torchrun's c10d rendezvous; the owner's worker hosts it)."""

    endpoint: str
    """``host:port`` of the owner's rendezvous store."""
    run_id: str
    """One per attempt, so nodes of an older attempt never join a newer one."""
    is_host: bool
    timeout: int
    """Seconds torchrun waits for every node before the attempt fails."""


def rendezvous_id(job_id: int, attempt: int) -> str:
    """torchrun's ``--rdzv-id`` for an attempt of a job."""
    return f"job-{job_id}-attempt-{attempt}"


def engine_command(
    config_file: Path,
    *,
    processes: int,
    resume: bool,
    cancel_file: Path,
    nodes: int = 1,
    rendezvous: Rendezvous | None = None,
) -> list[str]:
    """The command a worker runs: the engine alone; under ``torchrun --standalone`` for more than one
    process; or, on ``nodes`` machines, under torchrun meeting at ``rendezvous``.  ``--max-restarts 0``: a
    rank that dies fails the attempt (the job core decides what happens next)."""
    engine = ["-m", "training.engine", "train", str(config_file), "--no-progress", "--die-with-parent"]
    engine += ["--cancel-file", str(cancel_file)] + (["--resume"] if resume else [])
    if processes <= 1 and nodes <= 1:
        return [sys.executable, *engine]
    launcher = [sys.executable, "-m", "training.engine.launch", f"--nproc-per-node={processes}"]
    if nodes <= 1:
        return [*launcher, "--standalone", "--max-restarts=0", *engine]
    meet = [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rendezvous.endpoint}"]
    meet += [f"--rdzv-id={rendezvous.run_id}"]
    meet += [f"--rdzv-conf=is_host={str(rendezvous.is_host).lower()},join_timeout={rendezvous.timeout}"]
    return [*launcher, *meet, "--max-restarts=0", *engine]


def engine_start(command: list[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen:
    """The engine's process, in its own process group (a stop reaches every rank), its output appended to
    ``log_file``."""
    with log_file.open("ab") as output:
        return subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def engine_stop(process: subprocess.Popen) -> None:
    """SIGTERM to the engine's process group, SIGKILL after STOP_GRACE_SECONDS."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, None)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def engine_env(processes: int) -> dict[str, str]:
    """The engine's environment: this worker's torch threads shared among its processes, and none of a
    torchrun environment this worker may itself run under."""
    env = dict(os.environ)
    threads = max(1, torch_threads() // processes)
    env.update(OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


class MetricsTail:
    """The complete lines added to ``metrics.jsonl`` since the last read, for steps after ``after``. A
    resumed child replaces the file by one holding the lines up to its checkpoint (a new file, see
    JsonlMetrics), which is read again from its start."""

    def __init__(self, path: Path, after: int) -> None:
        self.path, self.offset, self.after = path, 0, after
        self.inode: int | None = None

    def read(self) -> list[dict]:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return []
        with fh:
            stat = os.fstat(fh.fileno())
            if stat.st_ino != self.inode or stat.st_size < self.offset:
                self.inode, self.offset = stat.st_ino, 0
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        rows = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
        fresh = [row for row in rows if row["step"] > self.after]
        if fresh:
            self.after = fresh[-1]["step"]
        return fresh


def node_address() -> str:
    """The address other nodes reach this worker at (TRAINING_NODE_ADDRESS, else this host's name)."""
    return settings.TRAINING_NODE_ADDRESS or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _published(out: Path) -> list[Path]:
    """The folders the engine has put in place (it writes each privately and renames it into place)."""
    found = sorted(p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit())
    found += sorted(p for p in (out / SAMPLES).glob("step-*") if p.is_dir() and p.name[5:].isdigit())
    return found + ([out / FINAL] if (out / FINAL).is_dir() else [])


def _numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class ChildRun:
    """One attempt's engine process: ``run()`` returns its TrainResult or raises ChildFailedError."""

    def __init__(
        self, job, watch: AttemptWatch, log: JobLog, *, metrics, recorder, resume: bool, send_nodes=None
    ) -> None:
        self.job, self.watch, self.log = job, watch, log
        self.metrics, self.recorder, self.resume = metrics, recorder, resume
        self.send_nodes = send_nodes
        """``send_nodes(rendezvous)`` asks ``nodes - 1`` other workers to join (``nodes.py``)."""
        self.out = Path(job.config["output_dir"])
        self.processes, self.nodes = child_processes(job.config), child_nodes(job.config)

    def run(self) -> TrainResult:
        config_file, cancel_file = self.out / LAUNCH_FILE, self.out / CANCEL_FILE
        self.out.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(self.job.config, sort_keys=False))
        for stale in (cancel_file, self.out / RESULT_FILE):
            stale.unlink(missing_ok=True)
        tail = MetricsTail(self.out / "metrics.jsonl", after=self.metrics.step)
        recorded = set(_published(self.out))
        rendezvous = self._rendezvous()
        command = engine_command(
            config_file,
            processes=self.processes,
            resume=self.resume,
            cancel_file=cancel_file,
            nodes=self.nodes,
            rendezvous=rendezvous,
        )
        shape = f"{self.processes} process{'es' if self.processes > 1 else ''}"
        if self.nodes > 1:
            shape += f" on each of {self.nodes} nodes, meeting at {rendezvous.endpoint}"
        self.log.write(f"engine: {shape}: {' '.join(command[1:])}")
        log_file = log_path(self.job)
        start = log_file.stat().st_size if log_file.exists() else 0
        process = engine_start(command, log_file, engine_env(self.processes))
        try:
            if rendezvous is not None:
                self.send_nodes(rendezvous)
            while process.poll() is None:
                self._relay(tail, recorded, cancel_file)
                time.sleep(CHILD_POLL_SECONDS)
            self._relay(tail, recorded, cancel_file, final=True)
        except BaseException:
            engine_stop(process)
            raise
        return self._result(process.returncode, log_file, start)

    def _rendezvous(self) -> Rendezvous | None:
        if self.nodes <= 1:
            return None
        endpoint = f"{node_address()}:{free_port()}"
        run_id = rendezvous_id(self.job.pk, self.watch.lease.attempt)
        timeout = settings.TRAINING_RENDEZVOUS_TIMEOUT_SECONDS
        return Rendezvous(endpoint=endpoint, run_id=run_id, is_host=True, timeout=timeout)

    def _relay(self, tail: MetricsTail, recorded: set, cancel_file: Path, *, final: bool = False) -> None:
        for row in tail.read():
            step = row.pop("step")
            self.metrics.log(_numbers(row), step)
        for folder in _published(self.out):
            if folder not in recorded:
                recorded.add(folder)
                self.recorder.on_saved(folder)
        if (
            not final and not cancel_file.exists() and self.watch.should_cancel()
        ):  # raises once the lease is lost
            cancel_file.touch()
            self.log.write("cancel asked: the engine stops before its next step")

    def _result(self, code: int, log_file: Path, start: int) -> TrainResult:
        path = self.out / RESULT_FILE
        if code != 0 or not path.is_file():
            message, lost = self._error_text(code, log_file, start)
            raise ChildFailedError(message, lost=lost)
        data = json.loads(path.read_text())
        return TrainResult(
            status=data["status"],
            step=int(data["step"]),
            output_dir=self.out,
            last_checkpoint=Path(data["last_checkpoint"]) if data.get("last_checkpoint") else None,
            final_model=Path(data["final_model"]) if data.get("final_model") else None,
            eval_metrics=_numbers(data.get("eval_metrics") or {}),
            dropped=data.get("dropped") or {},
            reference_was_cached=bool(data.get("reference_was_cached")),
        )

    def _error_text(self, code: int, log_file: Path, start: int) -> tuple[str, bool]:
        """``(the job's error, whether a process was lost to a signal)``."""
        with log_file.open("rb") as fh:
            fh.seek(start)
            lines = [line.strip() for line in fh.read().decode("utf-8", errors="replace").splitlines()]
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit code {code}"
        if any("RendezvousTimeoutError" in line for line in lines):
            message = (
                f"engine process failed ({how}): not all {self.nodes} nodes joined within "
                f"{settings.TRAINING_RENDEZVOUS_TIMEOUT_SECONDS} s (rendezvous timeout); the job needs "
                f"{self.nodes} free workers on the {self.job.queue!r} queue at once"
            )
            return message, False
        rank, rank_code = _root_cause(lines)
        if rank is not None and rank_code is not None and rank_code < 0:
            killed = f"rank {rank} was killed by {_signal_name(-rank_code)}"
            return f"engine process failed ({how}): {killed}", True
        errors = [line for line in lines if ERROR_LINE.match(line) and "ChildFailedError" not in line]
        own = [line for line in errors if rank is not None and line.startswith(f"[rank{rank}]: ")]
        if own or errors:
            text = re.sub(r"^\[rank\d+\]: ", "", (own or errors)[-1]).removeprefix("training stopped: ")
            where = f"rank {rank}: " if own else ""
            return f"engine process failed ({how}): {where}{text}", False
        return f"engine process failed ({how}) without an error message; see the job log", code < 0


def _root_cause(lines: list[str]) -> tuple[int | None, int | None]:
    """``(rank, exit code)`` of torchrun's "Root Cause (first observed failure)" block, if it printed one."""
    rank = exitcode = None
    if not any(line.startswith("Root Cause") for line in lines):
        return None, None
    block = lines[next(i for i, line in enumerate(lines) if line.startswith("Root Cause")) :]
    for line in block[:12]:
        if m := re.match(r"rank\s*:\s*(\d+)", line):
            rank = int(m[1])
        elif m := re.match(r"exitcode\s*:\s*(-?\d+)", line):
            exitcode = int(m[1])
    return rank, exitcode


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
