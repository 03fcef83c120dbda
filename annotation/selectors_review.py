"""Read side of an annotator's review pages: their recent judgments and their skipped tasks.

Every query here is filtered to one annotator in one project and bounded (``REVIEW_LIMIT`` rows).
Votes are described in the screen's terms: ``A`` is the response shown on the left when the
annotator judged (the judgment keeps that ``shown_order``), never the ``candidate_ids`` order.
"""

from django.db.models import QuerySet

from .models import Assignment, AssignmentState, Choice, Judgment, JudgmentSource, Project
from .text.messages import content_text

REVIEW_LIMIT = 50
SNIPPET_CHARS = 140
STRENGTH_WORDS = {1: "slightly", 2: "clearly", 3: "much better"}
CORRECTABLE_HELP = (
    "Pairwise, step-pair, multi-image and image-pair votes can be corrected here; ranking, step-label "
    "and sentence-label judgments cannot yet."
)


def prompt_snippet(item) -> str:
    """The item's prompt (or its first turn) as one line of plain text, cut at ``SNIPPET_CHARS``."""
    text = item.prompt
    if not text and isinstance(item.messages, list) and item.messages:
        first = item.messages[0]
        text = content_text(first.get("content") if isinstance(first, dict) else first)
    text = " ".join(str(text or "").split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def choice_side(judgment: Judgment) -> str:
    """The side the vote picked as shown: ``left``/``right``, or ``tie``/``both_bad`` unchanged."""
    if judgment.choice not in (Choice.A, Choice.B):
        return judgment.choice
    ids = list(judgment.task.candidate_ids)
    picked = ids[0] if judgment.choice == Choice.A else ids[-1]
    shown = list(judgment.shown_order or ids)
    return "left" if shown and shown[0] == picked else "right"


def vote_words(judgment: Judgment) -> str:
    """What the annotator decided, in words."""
    if judgment.choice:
        side = choice_side(judgment)
        if side in ("left", "right"):
            strength = STRENGTH_WORDS.get(judgment.strength)
            letter = "A (left)" if side == "left" else "B (right)"
            return f"{letter} is better" + (f" · {strength}" if strength else "")
        return Choice(judgment.choice).label
    if judgment.ranking:
        return f"Ranking of {sum(len(group) for group in judgment.ranking)} responses"
    if judgment.step_labels:
        wrong = judgment.first_wrong_step
        return (
            f"Step labels · first wrong step {wrong + 1}"
            if wrong is not None
            else "Step labels · no wrong step"
        )
    if judgment.sentence_labels:
        bad = sum(
            1 for s in judgment.sentence_labels if isinstance(s, dict) and s.get("label") == "hallucinated"
        )
        return f"Sentence labels · {bad} hallucinated of {len(judgment.sentence_labels)}"
    return "No vote recorded"


def judgment_correctable(judgment: Judgment) -> bool:
    """Choice votes can be corrected on the pair screens (see ``CORRECTABLE_HELP``)."""
    return bool(judgment.choice)


def _own_current(*, project: Project, annotator) -> QuerySet[Judgment]:
    return Judgment.objects.filter(
        task__project=project, annotator=annotator, source=JudgmentSource.HUMAN, superseded_by__isnull=True
    )


def judgments_recent_for_annotator(*, project: Project, annotator, limit: int = REVIEW_LIMIT) -> list[dict]:
    """The annotator's current (not superseded) judgments in the project, newest first, at most ``limit``."""
    rows = (
        _own_current(project=project, annotator=annotator)
        .select_related("task__item")
        .defer("task__item__metadata", "task__item__gold_payload")
        .order_by("-id")[:limit]
    )
    return [
        {
            "judgment": j,
            "snippet": prompt_snippet(j.task.item),
            "vote": vote_words(j),
            "correctable": judgment_correctable(j),
            "is_correction": j.supersedes_id is not None,
        }
        for j in rows
    ]


def judgment_for_annotator(*, project: Project, annotator, judgment_id: int) -> Judgment | None:
    """The annotator's own human judgment in this project (current or not), or None (views: 404)."""
    return (
        Judgment.objects.select_related("task__item")
        .filter(pk=judgment_id, task__project=project, annotator=annotator, source=JudgmentSource.HUMAN)
        .first()
    )


def judgment_current_of(judgment: Judgment) -> Judgment | None:
    """The annotator's current judgment on the same task: what superseded ``judgment`` in the end."""
    return (
        Judgment.objects.filter(
            task_id=judgment.task_id, annotator_id=judgment.annotator_id, superseded_by__isnull=True
        )
        .order_by("-id")
        .first()
    )


def assignments_skipped_for_annotator(
    *, project: Project, annotator, limit: int = REVIEW_LIMIT
) -> list[dict]:
    """The annotator's skipped tasks in the project with their reasons, newest first, at most ``limit``."""
    rows = (
        Assignment.objects.filter(task__project=project, annotator=annotator, state=AssignmentState.SKIPPED)
        .select_related("task__item")
        .defer("task__item__metadata", "task__item__gold_payload")
        .order_by("-id")[:limit]
    )
    return [{"assignment": a, "snippet": prompt_snippet(a.task.item), "reason": a.skip_reason} for a in rows]
