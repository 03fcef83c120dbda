"""Read-side queries used by views, the API and charts."""

from collections.abc import Collection

from django.db.models import OuterRef, QuerySet, Subquery

from .models import Judgment, JudgmentSource, Membership, Project, Role


def projects_for_user(*, user) -> QuerySet[Project]:
    """Projects the user belongs to (superusers see all)."""
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def member_role_subquery(*, user) -> Subquery:
    """The user's membership role in the outer query's project (``None`` for outsiders)."""
    return Subquery(Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1])


def project_role(*, user, project: Project) -> str | None:
    """The user's role in the project: ``manager``, ``annotator`` or None (superusers act as managers)."""
    if user.is_superuser:
        return Role.MANAGER
    membership = Membership.objects.filter(project=project, user=user).only("role").first()
    return membership.role if membership else None


def project_overview(*, project: Project) -> dict:
    """Counts for the project page: items, tasks, judgments wanted and done, members."""
    from .models import Assignment, AssignmentState, Judgment, JudgmentSource, Task

    tasks = Task.objects.filter(project=project).count()
    wanted = tasks * project.overlap
    human_done = Assignment.objects.filter(task__project=project, state=AssignmentState.DONE).count()
    return {
        "items": project.items.count(),
        "tasks": tasks,
        "judgments_wanted": wanted,
        "judgments_done": human_done,
        "imported_judgments": Judgment.objects.filter(
            task__project=project, source=JudgmentSource.IMPORTED
        ).count(),
        "percent_done": round(100 * human_done / wanted, 1) if wanted else 0.0,
        "members": project.memberships.select_related("user").order_by("role", "user__username"),
    }


# --- annotation queue and screen (issue §4) ---------------------------------------------------------


def assignment_live_q(*, now):
    """Assignments that hold a slot of a task's overlap: done, or active and not yet expired."""
    from django.db.models import Q

    from .models import AssignmentState

    return Q(state=AssignmentState.DONE) | Q(state=AssignmentState.ACTIVE, expires_at__gt=now)


def task_live_slots_subquery(*, now):
    """A correlated subquery counting a task's live slots (``OuterRef("pk")`` is the task).

    Imported judgments do not count: overlap is the number of *human* judgments wanted.
    """
    from django.db.models import Count, IntegerField, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    from .models import Assignment

    counts = (
        Assignment.objects.filter(assignment_live_q(now=now), task=OuterRef("pk"))
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def tasks_open_for_annotator(*, project: Project, annotator, now) -> QuerySet:
    """Tasks the annotator may still take: incomplete, never held by them (or only held and left to
    expire), with a free slot. Ordered by id."""
    from django.db.models import Exists, OuterRef

    from .models import Assignment, AssignmentState, Task

    own_final = Assignment.objects.filter(task=OuterRef("pk"), annotator=annotator).exclude(
        state=AssignmentState.ACTIVE, expires_at__lte=now
    )
    return (
        Task.objects.filter(project=project, complete=False)  # index task_queue_open, in id order
        .alias(live_slots=task_live_slots_subquery(now=now))
        .filter(live_slots__lt=project.overlap)
        .exclude(Exists(own_final))
        .order_by("id")
    )


def annotation_progress(*, project: Project, annotator) -> dict:
    """Progress for the annotate screen, from the queue counters (two indexed rows, one query).

    ``remaining`` is the project's incomplete tasks (fewer done assignments than its overlap) that the
    annotator has neither done nor skipped; tasks held by others right now still count as remaining.
    """
    totals, own = _progress_rows(project_id=project.pk, annotator_id=annotator.pk)
    totals = totals or project_counts(project_id=project.pk)  # no write has created the row yet
    own = own or annotator_counts(project_id=project.pk, annotator_id=annotator.pk)
    done, wanted = own["done"], totals["tasks"] * project.overlap
    remaining = max(0, totals["tasks"] - totals["tasks_complete"] - own["final_open"])
    project_done = totals["judgments_done"]
    return {
        "done": done,
        "skipped": own["skipped"],
        "remaining": remaining,
        "percent_mine": round(100 * done / (done + remaining), 1) if done + remaining else 100.0,
        "project_done": project_done,
        "project_wanted": wanted,
        "project_percent": round(100 * min(project_done, wanted) / wanted, 1) if wanted else 0.0,
    }


_PROGRESS_SQL = """
    SELECT p.tasks, p.tasks_complete, p.judgments_done, a.done, a.skipped, a.final_open
    FROM (SELECT 1 AS one) AS k
    LEFT JOIN annotation_projectprogress p ON p.project_id = %s
    LEFT JOIN annotation_annotatorprogress a ON a.project_id = %s AND a.annotator_id = %s
"""


def _progress_rows(*, project_id: int, annotator_id: int) -> tuple[dict | None, dict | None]:
    """Both counter rows in one statement (plain SQL: this runs on every annotate request)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_PROGRESS_SQL, [project_id, project_id, annotator_id])
        row = cursor.fetchone()
    totals = dict(zip(_PROJECT_COUNTERS, row[:3], strict=True)) if row[0] is not None else None
    own = dict(zip(_OWN_COUNTERS, row[3:], strict=True)) if row[3] is not None else None
    return totals, own


_PROJECT_COUNTERS = ("tasks", "tasks_complete", "judgments_done")
_OWN_COUNTERS = ("done", "skipped", "final_open")
FINAL_STATES = ("done", "skipped")  # AssignmentState.DONE, SKIPPED: the annotator is finished with the task


def project_counts(*, project_id: int) -> dict[str, int]:
    """Selector: the project's counters recounted from the tasks and assignments (O(tasks))."""
    from .models import Assignment, AssignmentState, Task

    tasks = Task.objects.filter(project_id=project_id)
    return {
        "tasks": tasks.count(),
        "tasks_complete": tasks.filter(complete=True).count(),
        "judgments_done": Assignment.objects.filter(
            task__project_id=project_id, state=AssignmentState.DONE
        ).count(),
    }


def annotator_counts(*, project_id: int, annotator_id: int) -> dict[str, int]:
    """Selector: one annotator's counters recounted from their assignments in the project."""
    from django.db.models import Count, Q

    from .models import Assignment, AssignmentState

    own = Assignment.objects.filter(task__project_id=project_id, annotator_id=annotator_id)
    return own.aggregate(
        done=Count("pk", filter=Q(state=AssignmentState.DONE)),
        skipped=Count("pk", filter=Q(state=AssignmentState.SKIPPED)),
        final_open=Count("pk", filter=Q(state__in=FINAL_STATES, task__complete=False)),
    )


def assignment_for_annotator(*, project: Project, annotator, assignment_id: int):
    """The annotator's own assignment in this project, or None (views turn None into 404)."""
    from .models import Assignment

    return (
        Assignment.objects.select_related("task__item")
        .filter(pk=assignment_id, annotator=annotator, task__project=project)
        .first()
    )


def human_judgment_count(*, task_ids: Collection[int]) -> int:
    """Current (not superseded) human judgments on the tasks: what a round labelled by people waits for."""
    return Judgment.objects.filter(
        task_id__in=list(task_ids), source=JudgmentSource.HUMAN, superseded_by__isnull=True
    ).count()
