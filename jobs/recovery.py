"""Recovery of jobs whose worker died or whose task message was lost, for every kind of job alike.

Each app describes its job kinds as ``JobKind`` rows; ``prefstudio/job_kinds.py`` lists them all, and
``prefstudio/tasks.py`` runs ``recover`` over them periodically (Celery beat, and a thread in every worker,
so deployments without beat recover too).  For each kind:

* ``stale_requeue``: RUNNING jobs silent for longer than the kind's stale limit are queued again (their
  next attempt resumes or restarts, as the kind's run does), failed once they used up their attempts, or
  cancelled when a cancel was asked for while their worker was lost;
* ``lost_resend``: QUEUED jobs whose task the broker never took (``sent_at`` empty: it was down when the
  job was created or requeued) are sent again after JOB_UNDELIVERED_RESEND_SECONDS; those whose task went
  out longer than the kind's resend limit ago are sent again too, in case the broker lost the message.  A
  duplicate delivery is harmless: the claim is conditional (``jobs.leases``).

Every send goes through ``jobs.sending.job_send``, which never raises and records whether it was delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .models import JobState
from .sending import job_send_on_commit

logger = logging.getLogger(__name__)

Fields = dict | Callable[[models.Model], dict]


@dataclass(frozen=True)
class JobKind:
    """How one kind of job is recovered."""

    name: str
    model: type[models.Model]
    enqueue: Callable[[int], None]
    """Send the job's task (by primary key)."""
    stale_after: Callable[[], timedelta]
    """How long a job may stay silent (read from the settings at each check)."""
    max_attempts: Callable[[], int]
    requeue: Fields = field(default_factory=dict)
    """Further fields a stale job gets when it is queued again (or ``requeue(job)``)."""
    fail: Fields = field(default_factory=dict)
    """Further fields a stale job gets when it has no attempt left (or ``fail(job)``); ``error`` at least."""
    waiting: Q = field(default_factory=Q)
    """What else a queued job must match to be waiting for a worker (an import awaiting confirmation
    is queued but has no task out; a training job whose cancel was asked for is not waiting)."""
    resend_after: Callable[[], timedelta] | None = None
    """How long a queued job may wait after its task was sent before it is sent again (None = the stale
    limit).  Longer for kinds whose jobs queue behind long runs, so a waiting job is not resent often."""
    cancel_field: str | None = None
    """A boolean field asking the job to stop: a stale job with it set is cancelled, not queued again."""


def seconds_setting(name: str) -> Callable[[], timedelta]:
    """A JobKind limit read from the setting ``name`` (seconds) at each check, so tests and deployments
    can change it."""
    return lambda: timedelta(seconds=getattr(settings, name))


def setting(name: str) -> Callable[[], int]:
    """A JobKind count read from the setting ``name`` at each check."""
    return lambda: getattr(settings, name)


def recover(kinds: Sequence[JobKind]) -> dict[str, list[int]]:
    """Resend lost tasks and requeue stale jobs of every kind; the ids requeued, by kind.  A kind whose
    check fails (a database hiccup) is logged and reported empty; the others still run."""
    requeued = {}
    for kind in kinds:
        try:
            lost_resend(kind)
            requeued[kind.name] = stale_requeue(kind)
        except Exception:  # noqa: BLE001 - one kind's failure must not stop the others' recovery
            logger.exception("stale %s job check failed", kind.name)
            requeued[kind.name] = []
    return requeued


def stale_requeue(kind: JobKind) -> list[int]:
    """RUNNING jobs whose heartbeat is older than the stale limit (or that never had one and are that old):
    queued again with ``kind.requeue`` and sent after commit, or FAILED with ``kind.fail`` once they had
    ``max_attempts`` attempts.  Returns the requeued ids."""
    now = timezone.now()
    silent = _silent_since(now - kind.stale_after())
    max_attempts = kind.max_attempts()
    requeued = []
    for job in kind.model.objects.filter(silent, state=JobState.RUNNING):
        stale = kind.model.objects.filter(silent, pk=job.pk, state=JobState.RUNNING, attempts=job.attempts)
        try:
            if kind.cancel_field and getattr(job, kind.cancel_field):
                stale.update(state=JobState.CANCELLED, finished_at=now)
            elif job.attempts >= max_attempts:
                stale.update(state=JobState.FAILED, finished_at=now, **_fields(kind.fail, job))
            elif stale.update(
                state=JobState.QUEUED, heartbeat_at=now, sent_at=None, **_fields(kind.requeue, job)
            ):
                requeued.append(job.pk)
                job_send_on_commit(kind, job.pk)
        except ObjectDoesNotExist:  # deleted meanwhile
            continue
    if requeued:
        logger.warning("%s jobs %s stopped reporting: queued again", kind.name, requeued)
    return requeued


def lost_resend(kind: JobKind) -> list[int]:
    """Send the task again for queued jobs the broker never took, once their last try
    (``heartbeat_at``, else ``created_at``) is JOB_UNDELIVERED_RESEND_SECONDS old, and for those whose task
    went out longer than the kind's resend limit ago; returns their ids."""
    now = timezone.now()
    undelivered = Q(sent_at__isnull=True) & _silent_since(now - undelivered_resend_after())
    delivered = Q(sent_at__isnull=False) & _silent_since(now - (kind.resend_after or kind.stale_after)())
    waiting = Q(state=JobState.QUEUED) & kind.waiting & (undelivered | delivered)
    resent = []
    for pk in kind.model.objects.filter(waiting).values_list("pk", flat=True):
        if kind.model.objects.filter(waiting, pk=pk).update(heartbeat_at=now):
            resent.append(pk)
            job_send_on_commit(kind, pk)
    if resent:
        logger.warning("%s jobs %s had no delivered task: sent again", kind.name, resent)
    return resent


def undelivered_resend_after() -> timedelta:
    return timedelta(seconds=settings.JOB_UNDELIVERED_RESEND_SECONDS)


def _silent_since(cutoff) -> Q:
    """No heartbeat since ``cutoff`` (a job that never had one counts from its creation)."""
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)


def _fields(fields: Fields, job: models.Model) -> dict:
    return fields(job) if callable(fields) else dict(fields)
