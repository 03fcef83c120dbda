"""The other nodes of a multi-node job: each joins the owner's rendezvous with its own torchrun.

A job with ``nodes`` = N > 1 is claimed by one worker, the owner (``runner.py`` with ``child_run.py``):
it holds the lease, hosts torchrun's c10d rendezvous on a free port, and queues N − 1 node tasks on the
job's queue.  Each worker that takes one runs the same engine command with ``is_host=false``: torchrun
meets the owner's, the N × processes_per_node ranks form one world, and rank 0 (wherever it landed)
writes metrics, checkpoints and ``result.json`` into the job's folder on the shared ARTIFACT_ROOT, which
the owner streams into the job, once.  A node task does nothing else: it records nothing, and stops its
torchrun as soon as the job is no longer running in the attempt that sent it.

When fewer than N workers are free, the nodes that did start wait for the rest until
TRAINING_RENDEZVOUS_TIMEOUT_SECONDS, then the owner's torchrun gives up and the job fails saying so; a
node task that arrives after its attempt ended finds nothing to join and exits.
"""

import logging
import time
from pathlib import Path

from jobs.models import JobState

from ..models import TrainingJob
from .child_run import (
    CANCEL_FILE,
    CHILD_POLL_SECONDS,
    LAUNCH_FILE,
    Rendezvous,
    child_nodes,
    child_processes,
    engine_command,
    engine_env,
    engine_start,
    engine_stop,
    node_address,
    rendezvous_id,
)
from .joblog import JobLog
from .paths import log_path

logger = logging.getLogger(__name__)


def nodes_send(*, job: TrainingJob, rendezvous: Rendezvous) -> None:
    """Queue the node tasks that join ``rendezvous`` (one per node beside the owner's)."""
    from ..tasks import training_node_run

    for _ in range(child_nodes(job.config) - 1):
        training_node_run.apply_async(
            args=[job.pk, rendezvous.run_id, rendezvous.endpoint, rendezvous.timeout], queue=job.queue
        )


def _attempt_running(job_id: int, run_id: str) -> bool:
    row = TrainingJob.objects.filter(pk=job_id).values_list("state", "attempts").first()
    return row is not None and row[0] == JobState.RUNNING and run_id == rendezvous_id(job_id, row[1])


def training_node_join(*, job_id: int, run_id: str, endpoint: str, timeout: int) -> str:
    """Run this node's share of the job's attempt ``run_id``; returns how it ended (for the worker log)."""
    if not _attempt_running(job_id, run_id):
        logger.info("job %s: %s is over; this node has nothing to join", job_id, run_id)
        return "late"
    job = TrainingJob.objects.get(pk=job_id)
    out = Path(job.config["output_dir"])
    log = JobLog.for_job(job)
    host = node_address()
    if not (out / LAUNCH_FILE).is_file():
        log.write(
            f"node {host}: cannot see {out / LAUNCH_FILE}, which the owner wrote: ARTIFACT_ROOT is not the "
            "storage the owner's worker uses, so this node does not join (docs/scaling.md)"
        )
        return "unshared"
    processes = child_processes(job.config)
    command = engine_command(
        out / LAUNCH_FILE,
        processes=processes,
        resume=job.attempts > 1,
        cancel_file=out / CANCEL_FILE,
        nodes=child_nodes(job.config),
        rendezvous=Rendezvous(endpoint=endpoint, run_id=run_id, is_host=False, timeout=timeout),
    )
    log.write(f"node {host}: joining {run_id} at {endpoint} with {processes} process(es)")
    process = engine_start(command, log_path(job), engine_env(processes))
    try:
        while process.poll() is None:
            if not _attempt_running(job_id, run_id):
                log.write(f"node {host}: {run_id} ended; stopping this node's processes")
                engine_stop(process)
                return "stopped"
            time.sleep(CHILD_POLL_SECONDS * 2)
    except BaseException:
        engine_stop(process)
        raise
    log.write(f"node {host}: its processes ended (exit code {process.returncode})")
    return "done" if process.returncode == 0 else "failed"
