"""The abstract job every background job (import, freeze, generation, training, and those to come)
extends: one state vocabulary, attempts, heartbeat, worker, error and timestamps (docs/architecture.md)."""

from django.conf import settings
from django.db import models


class JobState(models.TextChoices):
    QUEUED = "queued", "Waiting for a worker"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Job(models.Model):
    """A unit of background work; the row is the source of truth, the broker only transport.

    ``queued → running → succeeded | failed | cancelled``; a running job whose worker stops reporting is
    queued again (``jobs.recovery``).  ``attempts`` counts the claims and is the current attempt's lease."""

    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Workers that claimed it (a lost one is requeued)."
    )
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Running: the worker's last report. Queued: when its task was sent.",
    )
    sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the broker accepted its task; empty while the job waits for the broker.",
    )
    worker_host = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def awaiting_broker(self) -> bool:
        """Queued, but the broker has not taken its task (it was down): the recovery sends it again."""
        return self.state == JobState.QUEUED and self.sent_at is None

    @property
    def state_label(self) -> str:
        return "Waiting for the broker" if self.awaiting_broker else self.get_state_display()
