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

from django.db import IntegrityError, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce

from ..models import AnnotatorProgress, Assignment, AssignmentState, Project, ProjectProgress, Task
from ..selectors import FINAL_STATES, annotator_counts, project_counts


def _bump(model, key: dict, deltas: dict[str, int], recount: Callable[[], dict]) -> None:
    """Add ``deltas`` to the row at ``key``; if missing, create it from ``recount()`` (sees our writes)."""
    changes = {name: F(name) + delta for name, delta in deltas.items() if delta}
    if not changes or model.objects.filter(**key).update(**changes):
        return
    try:
        with transaction.atomic():
            model.objects.create(**key, **recount())
    except IntegrityError:  # another transaction created it meanwhile: its recount did not see ours
        model.objects.filter(**key).update(**changes)


def _bump_project(project_id: int, **deltas: int) -> None:
    _bump(ProjectProgress, {"project_id": project_id}, deltas, lambda: project_counts(project_id=project_id))


def _bump_annotator(project_id: int, annotator_id: int, **deltas: int) -> None:
    key = {"project_id": project_id, "annotator_id": annotator_id}
    _bump(AnnotatorProgress, key, deltas, lambda: annotator_counts(**key))


def progress_tasks_added(*, project_id: int, count: int) -> None:
    """New tasks (incomplete) were written in the current transaction."""
    _bump_project(project_id, tasks=count)


def progress_assignment_done(*, task: Task, annotator_id: int, overlap: int) -> None:
    """An assignment of ``task`` became DONE in this transaction (the caller holds the task's row lock)."""
    states = list(Assignment.objects.filter(task_id=task.pk).values_list("annotator_id", "state"))
    completes = not task.complete and sum(s == AssignmentState.DONE for _, s in states) >= overlap
    if completes:
        Task.objects.filter(pk=task.pk).update(complete=True)
        task.complete = True
    _bump_project(task.project_id, judgments_done=1, tasks_complete=int(completes))
    _bump_annotator(task.project_id, annotator_id, done=1, final_open=int(not task.complete))
    others = [a for a, s in states if s in FINAL_STATES and a != annotator_id]
    if completes and others:  # no longer an open task that they have finished
        AnnotatorProgress.objects.filter(project_id=task.project_id, annotator_id__in=others).update(
            final_open=F("final_open") - 1
        )


def progress_assignment_skipped(*, task: Task, annotator_id: int) -> None:
    """An assignment of ``task`` became SKIPPED in this transaction (the caller holds the task's row lock)."""
    _bump_annotator(task.project_id, annotator_id, skipped=1, final_open=int(not task.complete))


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
