"""What a training attempt does beside the engine while it runs: flush metrics, beat, watch for cancel.

The attempt holds the job core's lease (``jobs.leases``).  Under ``running()`` a background thread writes
the buffered metric points every TRAINING_METRICS_FLUSH_SECONDS (each flush also renews the lease with the
progress) and sends a bare heartbeat every TRAINING_HEARTBEAT_SECONDS when there is nothing to flush
(model loading, reference log-probs).  ``should_cancel`` (before every step) reads the cancel flag and the
lease in one primary-key query, every step as long as those queries stay under
TRAINING_CANCEL_CHECK_SHARE of the time, less often otherwise (and never less often than every
TRAINING_CANCEL_POLL_SECONDS, when that is set).  Once the lease is lost, ``should_cancel`` raises
LeaseLostError: the attempt stops without writing anything more.  ``fence`` runs before every file the
engine writes and asks the database itself (a worker paused past its takeover must not append one line).
"""

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from jobs.leases import Lease
from jobs.models import JobState

from ..models import TrainingJob
from .metrics import DbMetrics


class LeaseLostError(RuntimeError):
    """Another attempt (or a stale-job check) took over this job: stop without writing."""


class AttemptWatch:
    """The lease's heartbeat and the cancel poll of one attempt (``metrics`` is flushed by the beat)."""

    def __init__(self, lease: Lease, metrics: DbMetrics | None = None):
        self.lease, self.metrics = lease, metrics
        self.last_beat = time.monotonic()
        self.last_poll, self.interval, self.cancel = 0.0, 0.0, False

    def beat(self) -> bool:
        """One tick of the background thread; False once the lease is lost."""
        if self.metrics is not None and self.metrics.pending():
            self.metrics.flush()  # its on_flush renews the lease with the step reached
            self.last_beat = time.monotonic()
        elif time.monotonic() - self.last_beat >= settings.TRAINING_HEARTBEAT_SECONDS:
            self.lease.write()
            self.last_beat = time.monotonic()
        return not self.lease.lost.is_set()

    @contextmanager
    def running(self) -> Iterator["AttemptWatch"]:
        tick = min(settings.TRAINING_METRICS_FLUSH_SECONDS, settings.TRAINING_HEARTBEAT_SECONDS)
        with self.lease.heartbeat(tick, self.beat):
            yield self

    def fence(self, *, lock: bool = False) -> None:
        """Raise LeaseLostError unless this attempt still owns the job (one primary-key query; ``lock``
        holds the job's row until the caller's transaction ends)."""
        lease = self.lease
        mine = lease.mine.select_for_update() if lock else lease.mine
        if lease.lost.is_set() or not mine.exists():
            lease.lost.set()
            raise LeaseLostError(f"job {lease.pk}: attempt {lease.attempt} no longer owns the job")

    def should_cancel(self) -> bool:
        lease = self.lease
        if lease.lost.is_set():
            raise LeaseLostError(f"job {lease.pk}: attempt {lease.attempt} no longer owns the job")
        now = time.monotonic()
        if now - self.last_poll >= self.interval:
            tick = time.perf_counter()
            row = TrainingJob.objects.filter(pk=lease.pk).values_list("cancel_requested", "attempts", "state")
            cancel, attempts, state = row.get()
            cost = time.perf_counter() - tick
            self.last_poll = now
            share = settings.TRAINING_CANCEL_CHECK_SHARE
            self.interval = min(settings.TRAINING_CANCEL_POLL_SECONDS or math.inf, cost / share)
            if attempts != lease.attempt or state != JobState.RUNNING:
                lease.lost.set()
                return self.should_cancel()
            self.cancel = cancel
        return self.cancel
