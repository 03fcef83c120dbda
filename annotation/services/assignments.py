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

import functools
import random
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from ..models import Assignment, AssignmentState, Item, Project, Task
from ..text import text_problem
from .progress import progress_assignment_reopened, progress_assignment_skipped

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


# The pick, in plain SQL built once per shape (the ORM spent ~6 ms a request building it): the first
# open task by id (index task_queue_open) with a free slot that the annotator has not finished, as
# ``selectors.tasks_open_for_annotator`` defines it, locked with SKIP LOCKED on PostgreSQL.
_PICK = """
    SELECT t.* FROM annotation_task t {join}
    WHERE t.project_id = %s AND t.complete = %s {gold}
      AND (SELECT COUNT(*) FROM annotation_assignment a WHERE a.task_id = t.id
           AND (a.state = %s OR (a.state = %s AND a.expires_at > %s))) < %s
      AND NOT EXISTS (SELECT 1 FROM annotation_assignment o WHERE o.task_id = t.id AND o.annotator_id = %s
                      AND NOT (o.state = %s AND o.expires_at <= %s)) {passed}
    ORDER BY t.id LIMIT 1 {lock}"""
# Live slots held by others, counted again after the lock (a fresh statement: a fresh snapshot).
_LIVE_OTHERS = """
    SELECT COUNT(*) FROM annotation_assignment WHERE task_id = %s AND annotator_id <> %s
      AND (state = %s OR (state = %s AND expires_at > %s))"""


@functools.cache
def _pick_sql(*, regular_only: bool, passed: int, for_update: bool) -> str:
    return _PICK.format(
        join="JOIN annotation_item i ON i.id = t.item_id" if regular_only else "",
        gold="AND i.is_gold = %s" if regular_only else "",
        passed=f"AND t.id NOT IN ({', '.join(['%s'] * passed)})" if passed else "",
        lock="FOR UPDATE OF t SKIP LOCKED" if for_update else "",
    )


def _pick(*, project: Project, annotator, now, regular_only: bool, passed: list[int]) -> Task | None:
    active, done = AssignmentState.ACTIVE, AssignmentState.DONE
    at = connection.ops.adapt_datetimefield_value(now)
    params = [project.pk, False, *([False] if regular_only else [])]
    params += [done, active, at, project.overlap, annotator.pk, active, at, *passed]
    for_update = connection.features.has_select_for_update
    sql = _pick_sql(regular_only=regular_only, passed=len(passed), for_update=for_update)
    return next(iter(Task.objects.raw(sql, params)), None)


def _live_others(*, task: Task, annotator, now) -> int:
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            _LIVE_OTHERS, [task.pk, annotator.pk, AssignmentState.DONE, AssignmentState.ACTIVE, at]
        )
        return cursor.fetchone()[0]


def _lock_open_task(*, project: Project, annotator, now: datetime, regular_only: bool = False) -> Task | None:
    """Lock the first open task whose slot is still free once locked (call inside a transaction)."""
    passed: list[int] = []
    for _ in range(_MAX_PICKS):
        task = _pick(project=project, annotator=annotator, now=now, regular_only=regular_only, passed=passed)
        if task is None:
            return None
        if _live_others(task=task, annotator=annotator, now=now) < project.overlap:
            task.item = next(
                iter(Item.objects.raw("SELECT * FROM annotation_item WHERE id = %s", [task.item_id]))
            )
            return task  # with its item: the panel shows it
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


def assignment_reopen(*, assignment: Assignment, annotator, now: datetime | None = None) -> Assignment:
    """Take a skipped task back: the same row (one per task and annotator) becomes active again.

    It gets a new left/right order and expiry, and its skip reason is cleared. Refused when the task's
    slots have meanwhile been filled by others (done or live holds; gold tasks ignore overlap, as when
    taking them). Taking back an assignment that is already active again is a no-op (a double click).
    """
    now = now or timezone.now()
    if assignment.annotator_id != annotator.pk:
        raise ValidationError("This task is assigned to someone else.")
    with transaction.atomic():
        task = (  # same lock order as submitting and skipping: the task, then the assignment
            Task.objects.select_for_update(of=("self",))
            .select_related("project", "item")
            .get(pk=assignment.task_id)
        )
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.state == AssignmentState.ACTIVE:
            return locked
        if locked.state == AssignmentState.DONE:
            raise ValidationError("This task is already judged; correct it from your recent judgments.")
        if (
            not task.item.is_gold
            and _live_others(task=task, annotator=annotator, now=now) >= task.project.overlap
        ):
            raise ValidationError("Other annotators have filled this task since you skipped it.")
        locked.state = AssignmentState.ACTIVE
        locked.skip_reason = ""
        locked.shown_order = _shuffled(task.candidate_ids)
        locked.expires_at = now + timedelta(minutes=task.project.assignment_ttl_minutes)
        locked.save(update_fields=["state", "skip_reason", "shown_order", "expires_at"])
        progress_assignment_reopened(task=task, annotator_id=annotator.pk)
    return locked
