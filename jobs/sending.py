"""Sending a job's task to the broker without ever failing the caller.

A job's row is the source of truth and the broker only transport, so a broker that is down must cost a
delay, never a job or a request: ``job_send`` records whether the broker took the task (``sent_at``) and
swallows the failure; the recovery (``jobs.recovery.lost_resend``) sends an undelivered job again after
JOB_UNDELIVERED_RESEND_SECONDS, and its page says it waits for the broker meanwhile.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from .models import JobState

if TYPE_CHECKING:
    from .recovery import JobKind

logger = logging.getLogger(__name__)


def job_send(kind: JobKind, pk: int) -> bool:
    """Send job ``pk``'s task; True once the broker took it.  A failure is logged and leaves the job marked
    undelivered (``sent_at`` empty), never raised."""
    try:
        kind.enqueue(pk)
    except Exception as exc:  # noqa: BLE001 - any broker failure must leave the job for the recovery
        logger.warning(
            "%s job %s: the broker did not take its task (%s); it will be sent again", kind.name, pk, exc
        )
        kind.model.objects.filter(pk=pk, state=JobState.QUEUED).update(sent_at=None)
        return False
    kind.model.objects.filter(pk=pk).update(sent_at=timezone.now())
    return True


def job_send_on_commit(kind: JobKind, pk: int) -> None:
    """Send job ``pk``'s task once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: job_send(kind, pk))
