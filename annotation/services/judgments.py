"""Submitting and correcting judgments: pairwise, and typed submits for the other screens.

``choice`` always refers to the task's ``candidate_ids`` order (``a`` = first), never to the
left/right order shown; the judgment keeps the assignment's ``shown_order`` so position bias can be
studied later.

Expired holds: an assignment whose expiry passed is still ours (its row is unique per task and
annotator), so its judgment is accepted when the slot is still free, i.e. fewer than ``overlap``
other annotators hold live slots on the task. Otherwise the late judgment is refused with a message.

Double submission (double Enter, a retried POST): the assignment row is locked and, once DONE, a
second submit returns the judgment already stored instead of creating another.
"""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from ..models import Assignment, AssignmentState, Candidate, Choice, Judgment, JudgmentSource, Task
from ..selectors import assignment_live_q
from . import judgment_payloads as payloads
from .progress import progress_assignment_done

_MS_MAX = 2**31 - 1
_STRENGTH_REQUIRED = {Choice.A, Choice.B}


def _validate(*, choice: str, strength: int | None, rationale: str) -> None:
    errors = {}
    if choice not in Choice.values:
        errors["choice"] = "Choose A, B, tie or both bad."
    elif strength is None and choice in _STRENGTH_REQUIRED:
        errors["strength"] = "Say how strongly you prefer it (1 slightly, 2 clearly, 3 much better)."
    if strength is not None and strength not in (1, 2, 3):
        errors["strength"] = f"Strength must be 1, 2 or 3, not {strength}."
    errors.update(payloads.rationale_errors(rationale))
    if errors:
        raise ValidationError(errors)


def _clamp_ms(time_spent_ms: int | None, *, since: datetime, now: datetime) -> int | None:
    """Client-measured time, bounded by the time the task has existed for this annotator."""
    if time_spent_ms is None:
        return None
    upper = max(0, int((now - since).total_seconds() * 1000))
    return min(max(0, int(time_spent_ms)), upper, _MS_MAX)


def _latest_own(*, task_id: int, annotator) -> Judgment | None:
    return (
        Judgment.objects.filter(task_id=task_id, annotator=annotator, superseded_by__isnull=True)
        .order_by("-id")
        .first()
    )


def _check_slot(*, assignment: Assignment, overlap: int, now: datetime) -> None:
    if assignment.expires_at > now:
        return
    others = (
        Assignment.objects.filter(assignment_live_q(now=now), task_id=assignment.task_id)
        .exclude(pk=assignment.pk)
        .count()
    )
    if others >= overlap:
        raise ValidationError("Your time on this task ran out and other annotators have filled it.")


def judgment_submit(
    *,
    assignment: Assignment,
    annotator,
    choice: str,
    strength: int | None,
    rationale: str = "",
    time_spent_ms: int | None = None,
    now: datetime | None = None,
) -> Judgment:
    """Store the annotator's judgment on their assignment and mark it done, in one transaction."""
    rationale = (rationale or "").strip()
    _validate(choice=choice, strength=strength, rationale=rationale)
    fields = {"choice": choice, "strength": strength, "rationale": rationale}
    return _store(
        assignment=assignment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms, now=now
    )


# The submit's two row locks, task first (the same order as taking and skipping), in plain SQL: every
# submit runs them. The assignment is read again after the lock (its state may have changed meanwhile).
_LOCK_TASK = """
    SELECT t.project_id, t.complete, p.overlap FROM annotation_task t
    JOIN annotation_project p ON p.id = t.project_id WHERE t.id = %s"""
_LOCK_ASSIGNMENT = "SELECT * FROM annotation_assignment WHERE id = %s"
_MARK_DONE = "UPDATE annotation_assignment SET state = %s WHERE id = %s"


def _for_update(sql: str, *, of: str = "") -> str:
    if not connection.features.has_select_for_update:  # SQLite: the IMMEDIATE transaction serialises
        return sql
    return f"{sql} FOR UPDATE{f' OF {of}' if of else ''}"


def _lock(assignment: Assignment) -> tuple[Task | None, int, Assignment | None]:
    """Lock the assignment's task, then the assignment: (task, the project's overlap, fresh assignment)."""
    with connection.cursor() as cursor:
        cursor.execute(_for_update(_LOCK_TASK, of="t"), [assignment.task_id])
        row = cursor.fetchone()
    if row is None:
        return None, 0, None
    task = Task(pk=assignment.task_id, project_id=row[0], complete=bool(row[1]))
    locked = next(iter(Assignment.objects.raw(_for_update(_LOCK_ASSIGNMENT), [assignment.pk])), None)
    return task, row[2], locked


def _store(
    *, assignment: Assignment, annotator, fields: dict, time_spent_ms: int | None, now=None
) -> Judgment:
    """Create the judgment with ``fields`` and mark the assignment done (locked; a repeat returns it)."""
    now = now or timezone.now()
    if assignment.annotator_id != annotator.pk:
        raise ValidationError("This task is assigned to someone else.")
    with transaction.atomic():
        task, overlap, locked = _lock(assignment)
        if locked is None:
            raise Assignment.DoesNotExist("The assignment no longer exists.")
        if locked.state == AssignmentState.DONE:
            existing = _latest_own(task_id=locked.task_id, annotator=annotator)
            if existing is not None:
                return existing
            raise ValidationError("This task is already judged.")
        if locked.state != AssignmentState.ACTIVE:
            raise ValidationError("This task was skipped; it can no longer be judged.")
        _check_slot(assignment=locked, overlap=overlap, now=now)
        judgment = Judgment.objects.create(
            task_id=locked.task_id,
            annotator=annotator,
            source=JudgmentSource.HUMAN,
            shown_order=list(locked.shown_order),
            time_spent_ms=_clamp_ms(time_spent_ms, since=locked.created_at, now=now),
            **fields,
        )
        with connection.cursor() as cursor:
            cursor.execute(_MARK_DONE, [AssignmentState.DONE, locked.pk])
        locked.state = AssignmentState.DONE
        progress_assignment_done(task=task, annotator_id=annotator.pk, overlap=overlap)
    return judgment


def judgment_correct(
    *,
    judgment: Judgment,
    annotator,
    choice: str,
    strength: int | None,
    rationale: str = "",
    time_spent_ms: int | None = None,
) -> Judgment:
    """A new judgment by the same annotator that supersedes ``judgment`` (only the newest counts)."""
    rationale = (rationale or "").strip()
    _validate(choice=choice, strength=strength, rationale=rationale)
    fields = {"choice": choice, "strength": strength, "rationale": rationale}
    return _supersede(judgment=judgment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms)


def judgment_correct_image_pair(
    *, judgment: Judgment, annotator, choice: str, rationale: str = "", time_spent_ms: int | None = None
) -> Judgment:
    """An image-pair vote (``a``/``b``/``tie``) that supersedes ``judgment``, as ``judgment_correct``."""
    fields = payloads.image_pair_fields(choice=choice, rationale=(rationale or "").strip())
    return _supersede(judgment=judgment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms)


def _supersede(*, judgment: Judgment, annotator, fields: dict, time_spent_ms: int | None) -> Judgment:
    """Append the correction; the old row is never changed. Only the current judgment can be corrected."""
    if judgment.annotator_id is None or judgment.annotator_id != annotator.pk:
        raise ValidationError("Only the annotator who made a judgment can correct it.")
    with transaction.atomic():
        Judgment.objects.select_for_update().filter(pk=judgment.pk).first()
        if Judgment.objects.filter(supersedes=judgment).exists():
            raise ValidationError("This judgment was already corrected; correct the newest one instead.")
        return Judgment.objects.create(
            task_id=judgment.task_id,
            annotator=annotator,
            source=JudgmentSource.HUMAN,
            shown_order=judgment.shown_order,
            time_spent_ms=None if time_spent_ms is None else min(max(0, int(time_spent_ms)), _MS_MAX),
            supersedes=judgment,
            **fields,
        )


# --- typed submits for the other screens (payload rules in judgment_payloads) ----------------------


def _candidate_of(assignment: Assignment) -> Candidate | None:
    ids = assignment.task.candidate_ids
    return Candidate.objects.filter(pk=ids[0]).first() if ids else None


def judgment_submit_ranking(
    *,
    assignment: Assignment,
    annotator,
    ranking: list,
    ratings: dict[int, int] | None = None,
    rationale: str = "",
    time_spent_ms: int | None = None,
    now: datetime | None = None,
) -> Judgment:
    """A ranking of the task's candidates: groups of ids best first (a group is a tie), ratings 1–5."""
    fields = payloads.ranking_fields(
        ranking=ranking,
        ratings=ratings,
        candidate_ids=list(assignment.task.candidate_ids),
        rationale=(rationale or "").strip(),
    )
    return _store(
        assignment=assignment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms, now=now
    )


def judgment_submit_steps(
    *,
    assignment: Assignment,
    annotator,
    step_labels: list[str],
    corrected_step: str = "",
    rationale: str = "",
    time_spent_ms: int | None = None,
    now: datetime | None = None,
) -> Judgment:
    """Per-step labels of the task's one solution, stopping at the first wrong step, + its correction."""
    candidate = _candidate_of(assignment)
    if candidate is None:
        raise ValidationError("This solution is no longer available: skip the task.")
    fields = payloads.step_fields(
        step_labels=step_labels,
        corrected_step=corrected_step,
        n_steps=len(candidate.steps or [candidate.text]),
        rationale=(rationale or "").strip(),
    )
    return _store(
        assignment=assignment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms, now=now
    )


def judgment_submit_sentences(
    *,
    assignment: Assignment,
    annotator,
    sentence_labels: list[dict],
    rationale: str = "",
    time_spent_ms: int | None = None,
    now: datetime | None = None,
) -> Judgment:
    """One ``{"label": factual|hallucinated|not_claim, "correction"?}`` per sentence of the response."""
    candidate = _candidate_of(assignment)
    if candidate is None:
        raise ValidationError("This response is no longer available: skip the task.")
    sentences = payloads.candidate_sentences(sentences=candidate.sentences, text=candidate.text)
    fields = payloads.sentence_fields(
        sentence_labels=sentence_labels, n_sentences=len(sentences), rationale=(rationale or "").strip()
    )
    return _store(
        assignment=assignment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms, now=now
    )


def judgment_submit_image_pair(
    *,
    assignment: Assignment,
    annotator,
    choice: str,
    rationale: str = "",
    time_spent_ms: int | None = None,
    now: datetime | None = None,
) -> Judgment:
    """A Pick-a-Pic vote (``a``/``b``/``tie``, in ``candidate_ids`` order); ``label_score`` is label_0."""
    fields = payloads.image_pair_fields(choice=choice, rationale=(rationale or "").strip())
    return _store(
        assignment=assignment, annotator=annotator, fields=fields, time_spent_ms=time_spent_ms, now=now
    )
