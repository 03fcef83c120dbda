"""Submitting, correcting and double-submitting pairwise judgments."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from annotation.models import Assignment, AssignmentState, Judgment
from annotation.services.assignments import assignment_skip, assignment_take_next
from annotation.services.judgments import judgment_correct, judgment_submit
from tests.factories import UserFactory, pair_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def assignment(project, annotator):
    pair_task(project)
    return assignment_take_next(project=project, annotator=annotator)


def submit(assignment, annotator, **kwargs):
    values = {"choice": "a", "strength": 2, "rationale": "", "time_spent_ms": 1000} | kwargs
    return judgment_submit(assignment=assignment, annotator=annotator, **values)


def test_submit_stores_the_judgment_with_shown_order_and_marks_the_assignment_done(assignment, annotator):
    judgment = submit(assignment, annotator, choice="b", strength=3, rationale="  B is correct ")
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.DONE
    assert (judgment.choice, judgment.strength, judgment.rationale) == ("b", 3, "B is correct")
    assert judgment.shown_order == assignment.shown_order
    assert judgment.task_id == assignment.task_id and judgment.annotator == annotator


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"choice": "left"}, "choice"),
        ({"choice": "a", "strength": None}, "strength"),
        ({"choice": "b", "strength": 4}, "strength"),
        ({"choice": "tie", "strength": 0}, "strength"),
        ({"rationale": "x" * 5001}, "rationale"),
    ],
)
def test_submit_rejects_invalid_input_naming_the_field(assignment, annotator, kwargs, field):
    with pytest.raises(ValidationError) as error:
        submit(assignment, annotator, **kwargs)
    assert field in error.value.error_dict
    assert not Judgment.objects.exists()
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.ACTIVE


@pytest.mark.parametrize("choice", ["tie", "both_bad"])
def test_tie_and_both_bad_need_no_strength(assignment, annotator, choice):
    judgment = submit(assignment, annotator, choice=choice, strength=None)
    assert (judgment.choice, judgment.strength) == (choice, None)


def test_double_submit_creates_one_judgment_and_returns_the_first(assignment, annotator):
    first = submit(assignment, annotator, choice="a")
    second = submit(assignment, annotator, choice="b")
    assert second.pk == first.pk
    assert Judgment.objects.count() == 1


def test_submit_by_another_annotator_is_refused(assignment):
    with pytest.raises(ValidationError):
        submit(assignment, UserFactory(username="intruder"))
    assert not Judgment.objects.exists()


def test_skipped_assignment_cannot_be_judged(assignment, annotator):
    assignment_skip(assignment=assignment, annotator=annotator, reason="off topic")
    with pytest.raises(ValidationError, match="skipped"):
        submit(assignment, annotator)


def test_time_spent_is_clamped_to_the_time_since_the_task_was_taken(assignment, annotator):
    now = assignment.created_at + timedelta(seconds=5)
    judgment = submit(assignment, annotator, time_spent_ms=10**9, now=now)
    assert judgment.time_spent_ms == 5000


def test_negative_time_spent_is_stored_as_zero(assignment, annotator):
    assert submit(assignment, annotator, time_spent_ms=-50).time_spent_ms == 0


def test_expired_assignment_is_accepted_while_its_slot_is_free(assignment, annotator):
    late = assignment.expires_at + timedelta(minutes=1)
    judgment = submit(assignment, annotator, now=late)
    assert judgment.pk and Assignment.objects.get(pk=assignment.pk).state == AssignmentState.DONE


def test_expired_assignment_is_refused_once_another_annotator_took_the_slot(project, assignment, annotator):
    late = assignment.expires_at + timedelta(minutes=1)
    other = assignment_take_next(project=project, annotator=UserFactory(username="other"), now=late)
    assert other.task_id == assignment.task_id
    with pytest.raises(ValidationError, match="ran out"):
        submit(assignment, annotator, now=late)
    assert not Judgment.objects.exists()


def test_correction_supersedes_the_old_judgment_and_keeps_shown_order(assignment, annotator):
    original = submit(assignment, annotator, choice="a")
    corrected = judgment_correct(judgment=original, annotator=annotator, choice="tie", strength=None)
    assert corrected.supersedes == original and corrected.shown_order == original.shown_order
    assert Judgment.objects.get(pk=original.pk).choice == "a"  # append-only
    with pytest.raises(ValidationError, match="already corrected"):
        judgment_correct(judgment=original, annotator=annotator, choice="b", strength=1)


def test_only_the_author_can_correct_a_judgment(assignment, annotator):
    original = submit(assignment, annotator)
    with pytest.raises(ValidationError):
        judgment_correct(judgment=original, annotator=UserFactory(username="x"), choice="b", strength=1)


def test_double_submit_after_a_correction_returns_the_newest_judgment(assignment, annotator):
    original = submit(assignment, annotator)
    corrected = judgment_correct(judgment=original, annotator=annotator, choice="b", strength=1)
    assert submit(assignment, annotator).pk == corrected.pk
