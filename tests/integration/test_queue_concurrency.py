"""The task queue under concurrent annotators, on PostgreSQL (SELECT … FOR UPDATE SKIP LOCKED)."""

import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgment, Task
from annotation.selectors import assignment_live_q, tasks_open_for_annotator
from annotation.services.assignments import assignment_take_next
from annotation.services.judgments import judgment_submit
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ANNOTATORS = 8
TASKS = 30
OVERLAP = 3


@pytest.fixture(autouse=True)
def _needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL is not reachable (the suite runs on SQLite): SKIP LOCKED needs PostgreSQL")


def _annotate_until_empty(project, user, submitted, errors, start):
    try:
        start.wait()
        while True:
            assignment = assignment_take_next(project=project, annotator=user)
            if assignment is None:
                # None means "nothing free right now": tasks locked by another taker are skipped.
                if not tasks_open_for_annotator(project=project, annotator=user, now=timezone.now()).exists():
                    return
                time.sleep(0.01)
                continue
            judgment = judgment_submit(
                assignment=assignment, annotator=user, choice="a", strength=2, time_spent_ms=10
            )
            submitted.append(judgment.pk)
    except Exception as exc:  # reported by the main thread
        errors.append(exc)
    finally:
        connections.close_all()


def test_concurrent_annotators_fill_each_task_exactly_to_overlap():
    project = ProjectFactory(overlap=OVERLAP)
    tasks = [pair_task(project) for _ in range(TASKS)]
    users = [UserFactory(username=f"racer{i}") for i in range(ANNOTATORS)]
    for user in users:
        MembershipFactory(project=project, user=user)
    submitted, errors, start = [], [], threading.Barrier(ANNOTATORS)
    threads = [
        threading.Thread(target=_annotate_until_empty, args=(project, u, submitted, errors, start))
        for u in users
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    per_task = Counter(Judgment.objects.filter(task__project=project).values_list("task_id", flat=True))
    assert per_task == dict.fromkeys((t.pk for t in tasks), OVERLAP)
    pairs = Counter(Judgment.objects.values_list("task_id", "annotator_id"))
    assert max(pairs.values()) == 1, "an annotator judged the same task twice"
    assert sorted(submitted) == sorted(Judgment.objects.values_list("pk", flat=True)), "a judgment was lost"
    for task in Task.objects.filter(project=project):
        assert task.assignments.filter(state=AssignmentState.DONE).count() == OVERLAP
    assert not Assignment.objects.filter(state=AssignmentState.ACTIVE).exists()


def _take_in_thread(project, user, result):
    try:
        with transaction.atomic():
            result.append(assignment_take_next(project=project, annotator=user))
    except Exception as exc:
        result.append(exc)
    finally:
        connections.close_all()


def test_a_locked_task_is_skipped_rather_than_waited_for():
    project = ProjectFactory(overlap=1)
    locked_task, free_task = pair_task(project), pair_task(project)
    holder, taker = UserFactory(username="holder"), UserFactory(username="taker")
    result = []
    with transaction.atomic():
        # Another transaction holds the row lock on the first task (as a concurrent take would).
        Task.objects.select_for_update().get(pk=locked_task.pk)
        thread = threading.Thread(target=_take_in_thread, args=(project, taker, result))
        thread.start()
        thread.join(timeout=20)
        blocked = thread.is_alive()
    thread.join(timeout=20)
    assert not blocked, "assignment_take_next waited on the locked task instead of skipping it"
    assert result[0].task_id == free_task.pk
    assert assignment_take_next(project=project, annotator=holder).task_id == locked_task.pk


def test_when_the_only_open_task_is_locked_take_returns_none_immediately():
    project = ProjectFactory(overlap=1)
    only = pair_task(project)
    result = []
    with transaction.atomic():
        Task.objects.select_for_update().get(pk=only.pk)
        thread = threading.Thread(target=_take_in_thread, args=(project, UserFactory(username="t"), result))
        thread.start()
        thread.join(timeout=20)
        blocked = thread.is_alive()
    thread.join(timeout=20)
    assert not blocked and result == [None]
    assert not only.assignments.filter(assignment_live_q(now=only.created_at)).exists()
