"""Taking tasks from the queue: overlap, expiry, resume, skip."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgment, JudgmentSource
from annotation.selectors import annotation_progress
from annotation.services.assignments import assignment_skip, assignment_take_next
from annotation.services.judgments import judgment_submit
from tests.factories import UserFactory, pair_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def users():
    return [UserFactory(username=f"ann{i}") for i in range(4)]


def test_take_next_assigns_first_task_with_expiry_and_a_permutation_of_candidates(project, annotator):
    project.assignment_ttl_minutes = 15
    project.save()
    first, _second = pair_task(project), pair_task(project)
    now = timezone.now()
    assignment = assignment_take_next(project=project, annotator=annotator, now=now)
    assert assignment.task == first
    assert assignment.state == AssignmentState.ACTIVE
    assert sorted(assignment.shown_order) == sorted(first.candidate_ids)
    assert assignment.expires_at == now + timedelta(minutes=15)


def test_take_next_resumes_the_annotators_unexpired_assignment(project, annotator):
    pair_task(project), pair_task(project)
    first = assignment_take_next(project=project, annotator=annotator)
    again = assignment_take_next(project=project, annotator=annotator)
    assert again.pk == first.pk
    assert Assignment.objects.count() == 1


def test_shown_order_is_random_across_assignments(project, annotator):
    orders = set()
    for _ in range(40):
        task = pair_task(project)
        assignment = assignment_take_next(project=project, annotator=annotator)
        orders.add(tuple(c == task.candidate_ids[0] for c in assignment.shown_order))
        assignment.state = AssignmentState.DONE
        assignment.save()
    assert orders == {(True, False), (False, True)}


def test_overlap_limits_how_many_annotators_hold_a_task(project, users):
    project.overlap = 2
    project.save()
    task = pair_task(project)
    taken = [assignment_take_next(project=project, annotator=u) for u in users[:3]]
    assert [a.task_id if a else None for a in taken] == [task.pk, task.pk, None]


def test_expired_assignment_frees_its_slot_for_another_annotator(project, users):
    task = pair_task(project)
    now = timezone.now()
    held = assignment_take_next(project=project, annotator=users[0], now=now)
    assert assignment_take_next(project=project, annotator=users[1], now=now) is None
    later = now + timedelta(minutes=project.assignment_ttl_minutes + 1)
    other = assignment_take_next(project=project, annotator=users[1], now=later)
    assert other.task_id == task.pk and other.pk != held.pk


def test_own_expired_assignment_is_reactivated_on_the_same_row(project, annotator):
    pair_task(project)
    now = timezone.now()
    first = assignment_take_next(project=project, annotator=annotator, now=now)
    later = now + timedelta(minutes=project.assignment_ttl_minutes + 5)
    again = assignment_take_next(project=project, annotator=annotator, now=later)
    assert again.pk == first.pk
    assert again.expires_at == later + timedelta(minutes=project.assignment_ttl_minutes)
    assert Assignment.objects.count() == 1


def test_own_expired_assignment_is_not_reactivated_when_others_filled_the_slot(project, users):
    pair_task(project)
    now = timezone.now()
    assignment_take_next(project=project, annotator=users[0], now=now)
    later = now + timedelta(minutes=project.assignment_ttl_minutes + 1)
    assignment_take_next(project=project, annotator=users[1], now=later)
    assert assignment_take_next(project=project, annotator=users[0], now=later) is None


def test_done_and_skipped_tasks_are_never_offered_again(project, annotator):
    done_task, skipped_task, fresh = pair_task(project), pair_task(project), pair_task(project)
    project.overlap = 3
    project.save()
    first = assignment_take_next(project=project, annotator=annotator)
    Assignment.objects.filter(pk=first.pk).update(state=AssignmentState.DONE)
    second = assignment_take_next(project=project, annotator=annotator)
    assignment_skip(assignment=second, annotator=annotator, reason="not my field")
    third = assignment_take_next(project=project, annotator=annotator)
    assert [first.task_id, second.task_id, third.task_id] == [done_task.pk, skipped_task.pk, fresh.pk]
    Assignment.objects.filter(pk=third.pk).update(state=AssignmentState.DONE)
    assert assignment_take_next(project=project, annotator=annotator) is None


def test_imported_judgments_do_not_count_towards_human_overlap(project, annotator):
    task = pair_task(project)
    Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, choice="a")
    assert assignment_take_next(project=project, annotator=annotator).task_id == task.pk


def test_tasks_of_other_projects_are_not_taken(project, annotator):
    from tests.factories import ProjectFactory

    pair_task(ProjectFactory())
    assert assignment_take_next(project=project, annotator=annotator) is None


def test_skip_requires_a_reason_of_at_most_300_characters(project, annotator):
    pair_task(project)
    assignment = assignment_take_next(project=project, annotator=annotator)
    with pytest.raises(ValidationError) as blank:
        assignment_skip(assignment=assignment, annotator=annotator, reason="   ")
    assert "reason" in blank.value.error_dict
    with pytest.raises(ValidationError) as long:
        assignment_skip(assignment=assignment, annotator=annotator, reason="x" * 301)
    assert "301" in str(long.value)
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.ACTIVE


def test_skip_records_the_reason_and_rejects_another_annotator(project, users):
    pair_task(project)
    assignment = assignment_take_next(project=project, annotator=users[0])
    with pytest.raises(ValidationError):
        assignment_skip(assignment=assignment, annotator=users[1], reason="mine now")
    skipped = assignment_skip(assignment=assignment, annotator=users[0], reason="  broken prompt ")
    assert (skipped.state, skipped.skip_reason) == (AssignmentState.SKIPPED, "broken prompt")


def test_skipped_task_frees_its_slot_for_others(project, users):
    task = pair_task(project)
    assignment = assignment_take_next(project=project, annotator=users[0])
    assignment_skip(assignment=assignment, annotator=users[0], reason="unclear")
    assert assignment_take_next(project=project, annotator=users[1]).task_id == task.pk


def test_progress_counts_the_annotators_work_and_the_projects(project, users):
    project.overlap = 2
    project.save()
    for _ in range(3):
        pair_task(project)
    first = assignment_take_next(project=project, annotator=users[0])
    judgment_submit(assignment=first, annotator=users[0], choice="tie", strength=None)
    progress = annotation_progress(project=project, annotator=users[0])
    assert (progress["done"], progress["remaining"]) == (1, 2)
    assert (progress["project_done"], progress["project_wanted"]) == (1, 6)
