"""The one lease every job kind uses: claim by conditional update, renew through the owner's filter.

An attempt owns its job while the row is RUNNING with that attempt's number: ``job_claim`` is one
conditional UPDATE (``queued → running``, ``attempts + 1``), so a duplicate delivery or a second worker
finds the job not queued and does nothing.  Every write of the attempt goes through ``Lease.mine`` (the
row filtered by that ownership): progress reports renew ``heartbeat_at`` (``renew``), stages that report
nothing for long run under ``heartbeat``, and the outcome is ``finish``.  Once the job was requeued as stale
(``jobs.recovery``), the old attempt's filter matches nothing: its next write raises ``LeaseLost`` (or
returns False) and it stops without writing, so a job never has two writers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connection, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import JobState

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another attempt took this job over (it was requeued as stale): this attempt stops quietly."""


def job_claim(model: type[models.Model], *, pk: int, waiting: Q | None = None, **fields) -> Lease | None:
    """Take a queued job (one that also matches ``waiting``) for this worker, setting ``fields`` too;
    returns the attempt's lease, or None when the job was not there to take."""
    now = timezone.now()
    with transaction.atomic():  # the claim's row lock holds until its attempt number is read
        claimed = model.objects.filter(waiting or Q(), pk=pk, state=JobState.QUEUED).update(
            state=JobState.RUNNING,
            attempts=F("attempts") + 1,
            heartbeat_at=now,
            worker_host=socket.gethostname()[:200],
            started_at=Coalesce(F("started_at"), now),
            **fields,
        )
        if not claimed:
            return None
        return Lease(model, pk, model.objects.values_list("attempts", flat=True).get(pk=pk))


class Lease:
    """Attempt ``attempt``'s hold on job ``pk`` of ``model``; ``lost`` is set once a write finds the job
    taken over, ``done`` once the attempt recorded its outcome (its lease ends without being lost)."""

    def __init__(self, model: type[models.Model], pk: int, attempt: int) -> None:
        self.model, self.pk, self.attempt = model, pk, attempt
        self.lost = threading.Event()
        self.done = threading.Event()

    def __repr__(self) -> str:
        return f"<Lease {self.model.__name__} {self.pk} attempt {self.attempt}>"

    @property
    def mine(self) -> models.QuerySet:
        """The job, as long as this attempt owns it."""
        return self.model.objects.filter(pk=self.pk, state=JobState.RUNNING, attempts=self.attempt)

    def write(self, **fields) -> bool:
        """Write ``fields`` and a fresh heartbeat while this attempt owns the job; False (and ``lost``
        set) once it does not."""
        if self.mine.update(heartbeat_at=timezone.now(), **fields):
            return True
        if not self.done.is_set():
            self.lost.set()
        return False

    def renew(self, **fields) -> None:
        """``write``, raising LeaseLost when the job was taken over."""
        if not self.write(**fields):
            raise LeaseLost(f"{self.model.__name__} {self.pk}: attempt {self.attempt} no longer owns the job")

    def finish(self, state: str, **fields) -> bool:
        """Record the attempt's outcome (``state`` and ``finished_at``), only while it owns the job."""
        finished = self.write(state=state, finished_at=timezone.now(), **fields)
        if finished:
            self.done.set()
        return finished

    @contextmanager
    def heartbeat(self, every: float, beat: Callable[[], bool] | None = None) -> Iterator[Lease]:
        """Call ``beat`` (default: a bare heartbeat) every ``every`` seconds from a thread with its own
        database connection while the block runs, so a live worker in a long silent stage is not taken
        for a dead one.  The thread ends with the block, or once a beat returns False (the job was taken
        over); a beat that raises (a database hiccup, SQLite locked by the job's own write) is logged and
        tried again at the next beat."""
        stop = threading.Event()
        beat = beat or self.write

        def loop() -> None:
            try:
                while not stop.wait(every) and not self.done.is_set():
                    try:
                        if not beat():
                            return
                    except LeaseLost:
                        return
                    except Exception:  # noqa: BLE001 - the heartbeat must outlive a database hiccup
                        logger.warning("%r: heartbeat failed; retrying", self, exc_info=True)
            finally:
                connection.close()

        thread = threading.Thread(target=loop, name=f"{self.model.__name__}-{self.pk}-heartbeat", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=30)
