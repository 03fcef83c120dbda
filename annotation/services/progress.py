"""Queue counters: what the annotate screen's progress shows, kept in O(1) per request.

Every write that changes a count updates it in its own transaction, with ``F()`` increments (no
read-modify-write, so concurrent annotators never lose one):

* ``ProjectProgress``: tasks, complete tasks (``Task.complete``: done assignments ≥ overlap) and done
  assignments, for the project bar;
* ``AnnotatorProgress``: the annotator's done and skipped tasks, and ``final_open``, the incomplete
  tasks they have done or skipped. "Left for you" is incomplete tasks minus ``final_open``.

Callers hold the task's row lock (submit, skip), so the completion check and the flag agree with every
concurrent submit on the same task. Lock order, everywhere: task rows, then the project's counters,
then annotators' counters. A missing counter row is created from a recount (the first write of a new
project or annotator); a concurrent creator's row wins and ours is added to it.

Overlap changes and deletions outside services (the admin) call ``project_progress_refresh``, which
recomputes the flags and counters from the assignments.
"""

from collections.abc import Callable

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

from ..models import AnnotatorProgress, Assignment, AssignmentState, Project, ProjectProgress, Task
from ..selectors import FINAL_STATES, annotator_counts, project_counts


def _bump(model, key: dict, deltas: dict[str, int], recount: Callable[[], dict]) -> None:
    """Add ``deltas`` to the row at ``key``; if missing, create it from ``recount()`` (sees our writes).

    Plain SQL: a submit bumps two rows, and the ORM's ``F()`` update costs more to build than to run.
    """
    changes = {name: delta for name, delta in deltas.items() if delta}
    if not changes or _add(model, key, changes):
        return
    try:
        with transaction.atomic():
            model.objects.create(**key, **recount())
    except IntegrityError:  # another transaction created it meanwhile: its recount did not see ours
        _add(model, key, changes)


def _add(model, key: dict, changes: dict[str, int]) -> int:
    """``UPDATE … SET name = name + delta … WHERE key``: the number of rows changed (0 or 1)."""
    table = model._meta.db_table  # names from the models, values as parameters
    sets = ", ".join(f"{name} = {name} + %s" for name in changes)
    where = " AND ".join(f"{name} = %s" for name in key)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {sets} WHERE {where}", [*changes.values(), *key.values()])  # noqa: S608
        return cursor.rowcount


def _bump_project(project_id: int, **deltas: int) -> None:
    _bump(ProjectProgress, {"project_id": project_id}, deltas, lambda: project_counts(project_id=project_id))


def _bump_annotator(project_id: int, annotator_id: int, **deltas: int) -> None:
    key = {"project_id": project_id, "annotator_id": annotator_id}
    _bump(AnnotatorProgress, key, deltas, lambda: annotator_counts(**key))


def progress_tasks_added(*, project_id: int, count: int) -> None:
    """New tasks (incomplete) were written in the current transaction."""
    _bump_project(project_id, tasks=count)


# The task completes with this done assignment (the caller has just marked it done, under the task lock).
_COMPLETE_SQL = """
    UPDATE annotation_task SET complete = %s
    WHERE id = %s AND NOT complete
      AND (SELECT COUNT(*) FROM annotation_assignment WHERE task_id = %s AND state = %s) >= %s
"""
# Other annotators who finished a task that just completed: it is no longer an open task of theirs.
_OTHERS_SQL = """
    UPDATE annotation_annotatorprogress SET final_open = final_open - 1
    WHERE project_id = %s AND annotator_id IN (
        SELECT annotator_id FROM annotation_assignment
        WHERE task_id = %s AND state IN (%s, %s) AND annotator_id <> %s)
"""


def progress_assignment_done(*, task: Task, annotator_id: int, overlap: int) -> None:
    """An assignment of ``task`` became DONE in this transaction (the caller holds the task's row lock)."""
    completes = False
    if not task.complete:
        with connection.cursor() as cursor:
            cursor.execute(_COMPLETE_SQL, [True, task.pk, task.pk, AssignmentState.DONE, overlap])
            completes = task.complete = cursor.rowcount == 1
    _bump_project(task.project_id, judgments_done=1, tasks_complete=int(completes))
    _bump_annotator(task.project_id, annotator_id, done=1, final_open=int(not task.complete))
    if completes:
        with connection.cursor() as cursor:
            cursor.execute(_OTHERS_SQL, [task.project_id, task.pk, *FINAL_STATES, annotator_id])


def progress_assignment_skipped(*, task: Task, annotator_id: int) -> None:
    """An assignment of ``task`` became SKIPPED in this transaction (the caller holds the task's row lock)."""
    _bump_annotator(task.project_id, annotator_id, skipped=1, final_open=int(not task.complete))


def progress_assignment_reopened(*, task: Task, annotator_id: int) -> None:
    """A SKIPPED assignment of ``task`` became ACTIVE again (the caller holds the task's row lock).

    The reverse of ``progress_assignment_skipped``; a task that completed meanwhile has already left
    ``final_open`` (``progress_assignment_done`` decrements it for everyone who skipped it).
    """
    _bump_annotator(task.project_id, annotator_id, skipped=-1, final_open=-int(not task.complete))


def _refresh_complete_flags(project: Project) -> None:
    done = (
        Assignment.objects.filter(task=OuterRef("pk"), state=AssignmentState.DONE)
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    tasks = Task.objects.filter(project=project).alias(done=Coalesce(Subquery(done), 0))
    tasks.filter(complete=False, done__gte=project.overlap).update(complete=True)
    tasks.filter(complete=True, done__lt=project.overlap).update(complete=False)


@transaction.atomic
def project_progress_refresh(*, project: Project) -> ProjectProgress:
    """Recompute ``Task.complete`` and every counter of the project (after an overlap change; O(tasks))."""
    _refresh_complete_flags(project)
    row, _ = ProjectProgress.objects.select_for_update().get_or_create(project=project)
    for name, value in project_counts(project_id=project.pk).items():
        setattr(row, name, value)
    row.save()
    annotators = Assignment.objects.filter(task__project=project).values_list("annotator_id", flat=True)
    for annotator_id in annotators.order_by("annotator_id").distinct():
        AnnotatorProgress.objects.update_or_create(
            project=project,
            annotator_id=annotator_id,
            defaults=annotator_counts(project_id=project.pk, annotator_id=annotator_id),
        )
    return row
