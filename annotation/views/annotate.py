"""The annotation screens: a full page, and a task panel fragment that htmx swaps in place.

The pairwise screen lives here; the other screens (ranking, step-wise, factuality, multi-image, image
pair) are dispatched by project task type to ``views/screens/`` (their context and submit adapters).

The form posts a *side* (``left``/``right``/``tie``/``both_bad``); the server maps the side back to
``a``/``b`` through the assignment's ``shown_order``, so the page never needs to know which candidate
is ``a``. Model and prompt text pass through ``model_text_to_safe_html`` only.
"""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from ..access import project_member_required
from ..models import Assignment, AssignmentState, Choice
from ..rendering import markdown_to_safe_html
from ..selectors import annotation_progress, assignment_for_annotator
from ..services.assignments import assignment_skip, assignment_take_next
from ..services.judgments import judgment_submit
from . import screens
from .screens.common import (  # noqa: F401 (content_text and turns_html are re-exported)
    content_text,
    pair_candidate,
    prompt_context,
    shown_candidates,
    side_to_choice,
    turns_html,
)

PAGE = "annotation/annotate.html"
PANEL = "annotation/annotate.html#task-panel"
STRENGTHS = [("1", "1 · slightly"), ("2", "2 · clearly"), ("3", "3 · much better")]


# --- pure helpers ----------------------------------------------------------------------------------


def parse_strength(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({"strength": f"Strength must be 1, 2 or 3, not {raw[:20]!r}."}) from None


def parse_time_spent(raw: str | None, shown_at: str | None, *, now: datetime) -> int | None:
    """The client's visible-time measure, else the time since the server showed the task."""
    try:
        return int(float(raw))
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        shown = datetime.fromisoformat(shown_at or "")
    except ValueError:
        return None
    return int((now - shown).total_seconds() * 1000) if shown.tzinfo else None


def error_dict(exc: ValidationError) -> dict[str, str]:
    if hasattr(exc, "error_dict"):
        return {
            field: " ".join(m for e in errs for m in e.messages) for field, errs in exc.error_dict.items()
        }
    return {"__all__": " ".join(exc.messages)}


# --- context --------------------------------------------------------------------------------------


def _task_context(assignment: Assignment, *, task_type: str, values) -> dict:
    screen = screens.screen_for(task_type=task_type, assignment=assignment)
    context = {
        **prompt_context(assignment.task.item),
        **screens.screen_context(screen, assignment, values=values),
    }
    if screen == "pair":
        context["candidates"] = [
            pair_candidate(c, index=i) for i, c in enumerate(shown_candidates(assignment))
        ]
    return context


def _panel_context(request, *, assignment=None, errors=None, values=None, notice="", skip_open=False) -> dict:
    project = request.project
    values = values or {"strength": "2"}
    if assignment is None:
        assignment = assignment_take_next(project=project, annotator=request.user)
    context = {
        "project": project,
        "assignment": assignment,
        "progress": annotation_progress(project=project, annotator=request.user),
        "shown_at": timezone.now().isoformat(),
        "errors": errors or {},
        "values": values,
        "notice": notice,
        "skip_open": skip_open,
        "strengths": STRENGTHS,
    }
    if assignment is not None:
        context.update(_task_context(assignment, task_type=project.task_type, values=values))
    return context


def _own_assignment(request, assignment_id: int) -> Assignment:
    assignment = assignment_for_annotator(
        project=request.project, annotator=request.user, assignment_id=assignment_id
    )
    if assignment is None:
        raise Http404("No such task for you in this project.")
    return assignment


def _after_error(request, assignment, exc: ValidationError, *, skip_open=False):
    assignment.refresh_from_db()
    finished = assignment.state != AssignmentState.ACTIVE or assignment.expires_at <= timezone.now()
    if finished and not hasattr(exc, "error_dict"):  # nothing left to fix on this task: move on
        return _respond(request, _panel_context(request, notice=" ".join(exc.messages)))
    values = request.POST.copy()
    values.setdefault("strength", "2")  # a disabled strength group (tie, both bad) posts nothing
    context = _panel_context(
        request, assignment=assignment, errors=error_dict(exc), values=values, skip_open=skip_open
    )
    return _respond(request, context)


def _page(request, context):
    context["guidelines_html"] = markdown_to_safe_html(request.project.guidelines)
    context.update(screens.page_assets(request.project.task_type))
    return render(request, PAGE, context)


def _respond(request, context):
    if request.htmx:
        return render(request, PANEL, context)
    return _page(request, context)


def _next(request):
    if request.htmx:
        return render(request, PANEL, _panel_context(request))
    return redirect("annotate", project_id=request.project.pk)


# --- views ----------------------------------------------------------------------------------------


@require_GET
@project_member_required()
def annotate(request, project_id):
    return _page(request, _panel_context(request))


@require_GET
@project_member_required()
def annotate_next(request, project_id):
    return render(request, PANEL, _panel_context(request))


@require_POST
@project_member_required()
def annotate_submit(request, project_id, assignment_id):
    assignment = _own_assignment(request, assignment_id)
    post = request.POST
    time_spent_ms = parse_time_spent(post.get("time_spent_ms"), post.get("shown_at"), now=timezone.now())
    screen = screens.screen_for(task_type=request.project.task_type, assignment=assignment)
    submit = screens.SUBMITS.get(screen, _submit_pair)
    try:
        submit(assignment=assignment, annotator=request.user, post=post, time_spent_ms=time_spent_ms)
    except ValidationError as exc:
        return _after_error(request, assignment, exc)
    return _next(request)


def _submit_pair(*, assignment, annotator, post, time_spent_ms):
    choice = side_to_choice(
        post.get("choice", ""),
        shown_order=assignment.shown_order,
        candidate_ids=assignment.task.candidate_ids,
    )
    strength = parse_strength(post.get("strength")) if choice in (Choice.A, Choice.B) else None
    return judgment_submit(
        assignment=assignment,
        annotator=annotator,
        choice=choice,
        strength=strength,
        rationale=post.get("rationale", ""),
        time_spent_ms=time_spent_ms,
    )


@require_POST
@project_member_required()
def annotate_skip(request, project_id, assignment_id):
    assignment = _own_assignment(request, assignment_id)
    try:
        assignment_skip(assignment=assignment, annotator=request.user, reason=request.POST.get("reason", ""))
    except ValidationError as exc:
        return _after_error(request, assignment, exc, skip_open=True)
    return _next(request)


@require_GET
@project_member_required()
def annotate_assignment(request, project_id, assignment_id):
    """One of the annotator's own tasks (e.g. a skipped one just taken back), while it is theirs to judge."""
    assignment = _own_assignment(request, assignment_id)
    if assignment.state != AssignmentState.ACTIVE or assignment.expires_at <= timezone.now():
        return redirect("annotate", project_id=request.project.pk)
    return _page(request, _panel_context(request, assignment=assignment))
