"""Helpers for tests of the job core: run one kind's recovery with a short stale limit."""

from django.test import override_settings

from jobs.recovery import recover


def requeue_stale(kind, *, minutes: float = 5) -> list[int]:
    """Resend lost tasks and requeue stale jobs of ``kind`` (silent for ``minutes``); the requeued ids."""
    seconds = minutes * 60
    with override_settings(
        ANNOTATION_JOB_STALE_SECONDS=seconds,
        TRAINING_HEARTBEAT_STALE_SECONDS=seconds,
        TRAINING_QUEUED_RESEND_SECONDS=seconds,
    ):
        return recover([kind])[kind.name]
