"""Leases for the annotation app's worker jobs (generation, freeze, import).

An attempt owns its job while the row is RUNNING with that attempt's number: the claim is one
conditional UPDATE that also counts the attempt, and each progress report renews ``heartbeat_at`` through
the same condition (``lease_renew``).  A job whose worker stopped reporting is queued again, or failed
once it has used up its attempts (``stale_requeue``); the old attempt, should it wake up, finds the
condition false at its next report or at its final write and stops without writing.
"""

from collections.abc import Callable
from datetime import timedelta

from django.db import models, transaction
from django.utils import timezone


class LeaseLost(Exception):
    """Another attempt took this job over (it was requeued as stale): this attempt stops quietly."""


def lease_renew(mine: models.QuerySet, **fields) -> None:
    """Write ``fields`` and a fresh heartbeat through ``mine`` (the job filtered by this attempt's
    ownership); raises LeaseLost when the filter no longer matches."""
    if not mine.update(heartbeat_at=timezone.now(), **fields):
        raise LeaseLost(f"{mine.model.__name__}: this attempt no longer owns the job")


def stale_requeue(
    model: type[models.Model],
    *,
    running: str,
    stale_after: timedelta,
    max_attempts: int,
    requeue: dict | Callable[[int], dict],
    fail: dict,
    enqueue: Callable[[int], None],
) -> list[int]:
    """Jobs of ``model`` in status ``running`` whose heartbeat is older than ``stale_after``: updated with
    ``requeue`` (or ``requeue(pk)``) and sent to ``enqueue`` after commit, or with ``fail`` (and
    ``finished_at``) once they had ``max_attempts`` attempts.  Returns the requeued ids."""
    now = timezone.now()
    cutoff = now - stale_after
    requeued = []
    for pk, attempts in model.objects.filter(status=running, heartbeat_at__lt=cutoff).values_list(
        "pk", "attempts"
    ):
        stale = model.objects.filter(pk=pk, status=running, attempts=attempts, heartbeat_at__lt=cutoff)
        if attempts >= max_attempts:
            stale.update(finished_at=now, **fail)
        elif stale.update(**(requeue(pk) if callable(requeue) else requeue)):
            requeued.append(pk)
            transaction.on_commit(lambda pk=pk: enqueue(pk))
    return requeued
