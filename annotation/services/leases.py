"""Leases for the annotation app's worker jobs (generation, freeze, import).

An attempt owns its job while the row is RUNNING with that attempt's number: the claim is one
conditional UPDATE that also counts the attempt, and each progress report renews ``heartbeat_at`` through
the same condition (``lease_renew``); stages that report nothing for long run under ``heartbeat``.  A job
whose worker stopped reporting is queued again, or failed once it has used up its attempts
(``stale_requeue``); the old attempt, should it wake up, finds the condition false at its next report or
at its final write and stops without writing.

While a job waits for a worker, ``heartbeat_at`` is when its task was last sent (requeue and resend set
it); ``lost_resend`` sends the task again for jobs that waited longer than the stale limit, in case the
message was lost (a broker outage when it was sent).  A duplicate delivery is harmless: the claim is
conditional.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)

Fields = dict | Callable[[int], dict]


class LeaseLost(Exception):
    """Another attempt took this job over (it was requeued as stale): this attempt stops quietly."""


def lease_renew(mine: models.QuerySet, **fields) -> None:
    """Write ``fields`` and a fresh heartbeat through ``mine`` (the job filtered by this attempt's
    ownership); raises LeaseLost when the filter no longer matches."""
    if not mine.update(heartbeat_at=timezone.now(), **fields):
        raise LeaseLost(f"{mine.model.__name__}: this attempt no longer owns the job")


@contextmanager
def heartbeat(mine: models.QuerySet, every: float) -> Iterator[None]:
    """Renew ``heartbeat_at`` through ``mine`` every ``every`` seconds from a thread (with its own database
    connection) while the block runs, so a live worker in a long silent stage (loading a big project's
    votes, an import's write transaction) is not taken for a dead one.  The thread ends with the block, or
    as soon as the attempt no longer owns the job."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                try:
                    if not mine.update(heartbeat_at=timezone.now()):
                        return
                except DatabaseError:  # e.g. SQLite locked by the job's own write: try at the next beat
                    logger.warning("%s heartbeat failed; retrying", mine.model.__name__, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"{mine.model.__name__}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stale_requeue(
    model: type[models.Model],
    *,
    running: str,
    stale_after: timedelta,
    max_attempts: int,
    requeue: Fields,
    fail: Fields,
    enqueue: Callable[[int], None],
) -> list[int]:
    """Jobs of ``model`` in status ``running`` whose heartbeat is older than ``stale_after`` (or that never
    had one and are that old): updated with ``requeue`` (or ``requeue(pk)``) and sent to ``enqueue`` after
    commit, or with ``fail`` (and ``finished_at``) once they had ``max_attempts`` attempts.  Returns the
    requeued ids."""
    now = timezone.now()
    cutoff = now - stale_after
    silent = _silent_since(cutoff)
    requeued = []
    for pk, attempts in model.objects.filter(silent, status=running).values_list("pk", "attempts"):
        stale = model.objects.filter(silent, pk=pk, status=running, attempts=attempts)
        try:
            if attempts >= max_attempts:
                stale.update(finished_at=now, **_fields(fail, pk))
            elif stale.update(heartbeat_at=now, **_fields(requeue, pk)):
                requeued.append(pk)
                transaction.on_commit(lambda pk=pk: enqueue(pk))
        except ObjectDoesNotExist:  # deleted meanwhile
            continue
    return requeued


def lost_resend(
    model: type[models.Model], *, waiting: Q, stale_after: timedelta, enqueue: Callable[[int], None]
) -> list[int]:
    """Send the task again for jobs matching ``waiting`` (queued for a worker) whose task went out longer
    than ``stale_after`` ago (``heartbeat_at``, else ``created_at``); returns their ids."""
    now = timezone.now()
    cutoff = now - stale_after
    silent = _silent_since(cutoff)
    resent = []
    for pk in model.objects.filter(waiting & silent).values_list("pk", flat=True):
        if model.objects.filter(waiting & silent, pk=pk).update(heartbeat_at=now):
            resent.append(pk)
            transaction.on_commit(lambda pk=pk: enqueue(pk))
    if resent:
        logger.warning("%s %s waited past the stale limit: task sent again", model.__name__, resent)
    return resent


def _silent_since(cutoff) -> Q:
    """No heartbeat since ``cutoff`` (a job that never had one counts from its creation)."""
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)


def _fields(fields: Fields, pk: int) -> dict:
    return fields(pk) if callable(fields) else fields
