"""Taking tasks from a project's queue and skipping them.

Concurrency: a slot is taken inside one transaction that locks the task row first. On PostgreSQL the
candidate task is picked with ``SELECT … FOR UPDATE SKIP LOCKED`` (two annotators never wait on, or
both fill, the same last slot) and its live slots are counted again after the lock: under READ
COMMITTED the picking statement's snapshot may predate an assignment committed just before the lock
was granted. On SQLite the IMMEDIATE transaction mode in settings serialises writers instead.

"Never sees the same item twice" is enforced per task: an annotator holds at most one Assignment row
per task (a database constraint), so the same pair is never shown to them twice, and a skipped task
is never offered again. We deliberately do *not* exclude other tasks of an item they have already
judged: an item with N responses has N·(N−1)/2 pair tasks, and hiding all but one of them per
annotator would need ``overlap × pairs`` distinct annotators per item and stall small teams.
"""

import random
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..models import Assignment, AssignmentState, Project, Task
from ..selectors import assignment_live_q, tasks_open_for_annotator
from ..text import text_problem
from .progress import progress_assignment_skipped

SKIP_REASON_MAX = 300
_rng = random.SystemRandom()
_MAX_PICKS = 50


def _shuffled(ids: list[int]) -> list[int]:
    order = list(ids)
    _rng.shuffle(order)
    return order


def _resumable(*, project: Project, annotator, now: datetime) -> Assignment | None:
    return (
        Assignment.objects.select_related("task__item")  # the panel shows the item: no second query
        .filter(task__project=project, annotator=annotator, state=AssignmentState.ACTIVE, expires_at__gt=now)
        .order_by("created_at", "id")
        .first()
    )


def _lock_open_task(*, project: Project, annotator, now: datetime, regular_only: bool = False) -> Task | None:
    """Lock the first open task whose slot is still free once locked (call inside a transaction)."""
    passed: list[int] = []
    open_tasks = tasks_open_for_annotator(project=project, annotator=annotator, now=now)
    if regular_only:
        open_tasks = open_tasks.filter(item__is_gold=False)
    for _ in range(_MAX_PICKS):
        candidates = open_tasks.exclude(pk__in=passed).select_related("item")  # the panel shows the item
        task = candidates.select_for_update(skip_locked=True, of=("self",)).first()
        if task is None:
            return None
        live = task.assignments.filter(assignment_live_q(now=now)).exclude(annotator=annotator).count()
        if live < project.overlap:
            return task
        passed.append(task.pk)  # filled by a transaction that committed after our snapshot
    return None


def _take_task(*, project: Project, annotator, now: datetime) -> Task | None:
    """With a gold rate, a gold task (silently, at that rate) or else a regular one; otherwise any task."""
    if project.gold_rate <= 0:
        return _lock_open_task(project=project, annotator=annotator, now=now)
    from .gold import gold_task_lock

    if _rng.random() < project.gold_rate:
        task = gold_task_lock(project=project, annotator=annotator, now=now)
        if task is not None:
            return task
    return _lock_open_task(project=project, annotator=annotator, now=now, regular_only=True)


def assignment_take_next(*, project: Project, annotator, now: datetime | None = None) -> Assignment | None:
    """The annotator's current task in this project, or a newly taken one, or None when nothing is left.

    Resumes the annotator's own active, unexpired assignment. Otherwise takes the first open task (by
    id) with a free slot and holds it for ``project.assignment_ttl_minutes``, showing the candidates in
    a random left/right order. With ``project.gold_rate`` > 0 a gold task the annotator has not done is
    taken instead at that rate (gold tasks ignore overlap and are never served as regular tasks). The
    annotator's own expired, unjudged assignment is re-activated (same row, new order and expiry) when
    its slot is still free.
    """
    now = now or timezone.now()
    current = _resumable(project=project, annotator=annotator, now=now)
    if current is not None:
        return current
    with transaction.atomic():
        task = _take_task(project=project, annotator=annotator, now=now)
        if task is None:
            return None
        return _hold(task=task, annotator=annotator, now=now, ttl_minutes=project.assignment_ttl_minutes)


def _hold(*, task: Task, annotator, now: datetime, ttl_minutes: int) -> Assignment:
    """A new assignment, or our own expired hold taken again (same row, new order and expiry): one upsert."""
    assignment = Assignment(
        task=task,
        annotator=annotator,
        state=AssignmentState.ACTIVE,
        shown_order=_shuffled(task.candidate_ids),
        expires_at=now + timedelta(minutes=ttl_minutes),
    )
    Assignment.objects.bulk_create(
        [assignment],
        update_conflicts=True,
        unique_fields=["task", "annotator"],
        update_fields=["state", "shown_order", "expires_at"],
    )
    if assignment.pk is None:  # a database that returns no ids from an upsert
        assignment = Assignment.objects.get(task=task, annotator=annotator)
    return assignment


def assignment_skip(*, assignment: Assignment, annotator, reason: str) -> Assignment:
    """Give a task back with a reason; the task is never offered to this annotator again.

    Skipping an already skipped assignment is a no-op (a double click), skipping a judged one an error.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why you skip this task (a few words are enough)."})
    if len(reason) > SKIP_REASON_MAX:
        raise ValidationError(
            {"reason": f"The reason is {len(reason)} characters; at most {SKIP_REASON_MAX}."}
        )
    if problem := text_problem(reason):
        raise ValidationError({"reason": f"The reason {problem}."})
    if assignment.annotator_id != annotator.pk:
        raise ValidationError("This task is assigned to someone else.")
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=assignment.task_id)  # same lock order as submitting
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.state == AssignmentState.SKIPPED:
            return locked
        if locked.state == AssignmentState.DONE:
            raise ValidationError("This task is already judged; it can no longer be skipped.")
        locked.state = AssignmentState.SKIPPED
        locked.skip_reason = reason
        locked.save(update_fields=["state", "skip_reason"])
        progress_assignment_skipped(task=task, annotator_id=annotator.pk)
    return locked
