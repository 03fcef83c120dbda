"""An annotator's review pages: recent judgments (with corrections) and skipped tasks (taken back).

Everyone, managers included, sees only their own judgments and skips here. A correction reuses the
task's screen (``annotate.html``), pre-filled with the current vote and laid out as it was shown; it
posts a plain form (no htmx) and stores a new judgment that supersedes the old one
(``services.judgments``). Refusals are 4xx pages with the reason, never 5xx.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..access import project_member_required
from ..models import Assignment, Choice, TaskType
from ..selectors import annotation_progress, assignment_for_annotator
from ..selectors_review import (
    CORRECTABLE_HELP,
    REVIEW_LIMIT,
    assignments_skipped_for_annotator,
    choice_side,
    judgment_correctable,
    judgment_current_of,
    judgment_for_annotator,
    judgments_recent_for_annotator,
    vote_words,
)
from ..services.assignments import assignment_reopen
from ..services.judgments import judgment_correct, judgment_correct_image_pair
from .annotate import STRENGTHS, _page, _task_context, error_dict, parse_strength, parse_time_spent
from .screens.common import side_to_choice

JUDGMENTS_PAGE = "annotation/my_judgments.html"
SKIPPED_PAGE = "annotation/my_skipped.html"


def _review_page(request, template: str, rows: list[dict], *, status: int = 200, **extra):
    """One of the two review pages: the rows, the annotator's progress and ``extra`` (an error, …)."""
    context = {
        "project": request.project,
        "rows": rows,
        "limit": REVIEW_LIMIT,
        "progress": annotation_progress(project=request.project, annotator=request.user),
        **extra,
    }
    return render(request, template, context, status=status)


def _judgments_page(request, *, error: str = "", current=None, status: int = 200):
    rows = judgments_recent_for_annotator(project=request.project, annotator=request.user)
    extra = {"error": error, "current": current, "correctable_help": CORRECTABLE_HELP}
    return _review_page(request, JUDGMENTS_PAGE, rows, status=status, **extra)


@require_GET
@project_member_required()
def my_judgments(request, project_id):
    return _judgments_page(request)


def _own_judgment(request, judgment_id: int):
    judgment = judgment_for_annotator(
        project=request.project, annotator=request.user, judgment_id=judgment_id
    )
    if judgment is None:
        raise Http404("No such judgment of yours in this project.")
    return judgment


def _correction_context(request, judgment, *, values=None, errors=None) -> dict:
    shown = Assignment(
        task=judgment.task, shown_order=list(judgment.shown_order or judgment.task.candidate_ids)
    )
    if values is None:
        values = {"choice": choice_side(judgment), "strength": str(judgment.strength or 2)}
        values["rationale"] = judgment.rationale
    context = {
        "project": request.project,
        "assignment": shown,
        "correction": judgment,
        "submit_url": reverse("my-judgment-correct", args=[request.project.pk, judgment.pk]),
        "progress": annotation_progress(project=request.project, annotator=request.user),
        "shown_at": timezone.now().isoformat(),
        "errors": errors or {},
        "values": values,
        "strengths": STRENGTHS,
        "notice": (
            f"Correcting your vote “{vote_words(judgment)}” of {judgment.created_at:%Y-%m-%d %H:%M}. "
            "Submitting stores a new judgment that supersedes it; dataset versions already frozen keep "
            "the old one."
        ),
    }
    context.update(_task_context(shown, task_type=request.project.task_type, values=values))
    return context


def _store_correction(request, judgment):
    post = request.POST
    choice = side_to_choice(
        post.get("choice", ""),
        shown_order=list(judgment.shown_order or []),
        candidate_ids=judgment.task.candidate_ids,
    )
    common = {
        "judgment": judgment,
        "annotator": request.user,
        "rationale": post.get("rationale", ""),
        "time_spent_ms": parse_time_spent(
            post.get("time_spent_ms"), post.get("shown_at"), now=timezone.now()
        ),
    }
    if request.project.task_type == TaskType.IMAGE_PAIR:
        return judgment_correct_image_pair(choice=choice, **common)
    strength = parse_strength(post.get("strength")) if choice in (Choice.A, Choice.B) else None
    return judgment_correct(choice=choice, strength=strength, **common)


@require_http_methods(["GET", "POST"])
@project_member_required()
def my_judgment_correct(request, project_id, judgment_id):
    judgment = _own_judgment(request, judgment_id)
    current = judgment_current_of(judgment)
    if current is not None and current.pk != judgment.pk:
        refusal = "This judgment was already corrected; correct your current judgment instead."
        return _judgments_page(request, error=refusal, current=current, status=409)
    if not judgment_correctable(judgment):
        return _judgments_page(request, error=CORRECTABLE_HELP, status=400)
    if request.method == "POST":
        try:
            new = _store_correction(request, judgment)
        except ValidationError as exc:
            errors = error_dict(exc)
            if "__all__" in errors:  # nothing on the form to fix (e.g. corrected meanwhile)
                current = judgment_current_of(judgment)
                return _judgments_page(request, error=errors["__all__"], current=current, status=409)
            context = _correction_context(request, judgment, values=request.POST, errors=errors)
            return _correction_page(request, context, status=400)
        messages.success(request, f"Correction saved: your vote is now “{vote_words(new)}”.")
        return redirect("my-judgments", project_id=request.project.pk)
    return _correction_page(request, _correction_context(request, judgment))


def _correction_page(request, context, *, status: int = 200):
    response = _page(request, context)
    response.status_code = status
    return response


# --- skipped tasks ---------------------------------------------------------------------------------


def _skipped_page(request, *, error: str = "", status: int = 200):
    rows = assignments_skipped_for_annotator(project=request.project, annotator=request.user)
    return _review_page(request, SKIPPED_PAGE, rows, status=status, error=error)


@require_GET
@project_member_required()
def my_skipped(request, project_id):
    return _skipped_page(request)


@require_POST
@project_member_required()
def my_skipped_take_back(request, project_id, assignment_id):
    assignment = assignment_for_annotator(
        project=request.project, annotator=request.user, assignment_id=assignment_id
    )
    if assignment is None:
        raise Http404("No such task of yours in this project.")
    try:
        reopened = assignment_reopen(assignment=assignment, annotator=request.user)
    except ValidationError as exc:
        return _skipped_page(request, error=" ".join(exc.messages), status=409)
    return redirect("annotate-assignment", project_id=request.project.pk, assignment_id=reopened.pk)
