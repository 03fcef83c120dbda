"""How many CPU threads torch uses in one job: the worker's cores shared among the jobs it runs at once.

A worker with ``--concurrency 2`` on two cores that lets each job take torch's default (every core)
oversubscribes the machine: both jobs slow down many times over.  TRAINING_TORCH_THREADS sets the count;
0 (the default) divides the cores this process may use by the worker's concurrency, which the worker
records when it starts (``training/tasks.py``).
"""

import os

from django.conf import settings

_worker_slots = 1


def worker_slots_set(slots: int) -> None:
    """Record how many jobs this worker runs at once (its pool's concurrency)."""
    global _worker_slots  # noqa: PLW0603 - set once per worker process, before its pool forks
    _worker_slots = max(1, int(slots or 1))


def torch_threads() -> int:
    """Intra-op threads for one job."""
    if settings.TRAINING_TORCH_THREADS:
        return settings.TRAINING_TORCH_THREADS
    return max(1, len(os.sched_getaffinity(0)) // _worker_slots)
