"""Every kind of background job, in one place, and their periodic recovery (``jobs/recovery.py``):
training runs (resumed from their checkpoint), generations (resumed per item), online loops (resumed at
their round's stage), domain streams (started over), freezes and imports (run again; nothing of theirs had
committed).

Celery beat runs ``prefstudio.tasks.jobs_recover``; every worker also runs the same check on a thread
(``prefstudio/tasks.py``), so deployments without a beat process (``make run``, docker-compose) recover too.
"""

from annotation.services.freeze_jobs import FREEZE_JOBS
from annotation.services.import_jobs import IMPORT_JOBS
from jobs.recovery import JobKind, recover
from training.services.domain_streams import DOMAIN_STREAM_JOBS
from training.services.generation import GENERATION_JOBS
from training.services.jobs import TRAINING_JOBS
from training.services.loops import LOOP_JOBS

JOB_KINDS: tuple[JobKind, ...] = (
    TRAINING_JOBS,
    GENERATION_JOBS,
    FREEZE_JOBS,
    IMPORT_JOBS,
    LOOP_JOBS,
    DOMAIN_STREAM_JOBS,
)


def recover_stale_jobs() -> dict[str, list[int]]:
    """The ids requeued, by kind of job (a kind whose check failed is logged and reported empty)."""
    return recover(JOB_KINDS)
