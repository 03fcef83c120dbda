"""The task queue under concurrent annotators, on PostgreSQL (SELECT … FOR UPDATE SKIP LOCKED): each task
filled exactly to overlap, no judgment lost or doubled, the queue counters equal to a recount."""

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgment, Task
from annotation.selectors import assignment_live_q, tasks_open_for_annotator
from annotation.services.assignments import assignment_skip, assignment_take_next
from annotation.services.judgments import judgment_submit
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task
from tests.unit.test_queue_counters import recounted, shown

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ANNOTATORS = 8
TASKS = 30
OVERLAP = 3


@pytest.fixture(autouse=True)
def _needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL is not reachable (the suite runs on SQLite): SKIP LOCKED needs PostgreSQL")


def _annotate_until_empty(project, user, act, errors, start):
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
            act(assignment, user)
    except Exception as exc:  # reported by the main thread
        errors.append(exc)
    finally:
        connections.close_all()


def _race(project, users, act) -> None:
    """Every user annotates ``project`` at once, ``act(assignment, user)`` per task, until nothing is left."""
    errors, start = [], threading.Barrier(len(users))
    threads = [
        threading.Thread(target=_annotate_until_empty, args=(project, user, act, errors, start))
        for user in users
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_concurrent_annotators_fill_each_task_exactly_to_overlap():
    project = ProjectFactory(overlap=OVERLAP)
    tasks = [pair_task(project) for _ in range(TASKS)]
    users = [UserFactory(username=f"racer{i}") for i in range(ANNOTATORS)]
    for user in users:
        MembershipFactory(project=project, user=user)
    submitted = []

    def submit(assignment, user):
        judgment = judgment_submit(
            assignment=assignment, annotator=user, choice="a", strength=2, time_spent_ms=10
        )
        submitted.append(judgment.pk)

    _race(project, users, submit)
    per_task = Counter(Judgment.objects.filter(task__project=project).values_list("task_id", flat=True))
    assert per_task == dict.fromkeys((t.pk for t in tasks), OVERLAP)
    pairs = Counter(Judgment.objects.values_list("task_id", "annotator_id"))
    assert max(pairs.values()) == 1, "an annotator judged the same task twice"
    assert sorted(submitted) == sorted(Judgment.objects.values_list("pk", flat=True)), "a judgment was lost"
    for task in Task.objects.filter(project=project):
        assert task.assignments.filter(state=AssignmentState.DONE).count() == OVERLAP
    assert not Assignment.objects.filter(state=AssignmentState.ACTIVE).exists()


def test_queue_counters_match_a_recount_after_concurrent_submits_and_skips():
    project = ProjectFactory(overlap=2)
    for _ in range(24):
        pair_task(project)
    users = [UserFactory(username=f"counter{i}") for i in range(6)]
    rngs = {user.pk: random.Random(i) for i, user in enumerate(users)}

    def submit_or_skip(assignment, user):
        if rngs[user.pk].random() < 0.2:
            assignment_skip(assignment=assignment, annotator=user, reason="not sure")
        else:
            judgment_submit(assignment=assignment, annotator=user, choice="b", strength=3)

    _race(project, users, submit_or_skip)
    assert Assignment.objects.filter(state=AssignmentState.SKIPPED).exists()
    for user in users:
        assert shown(project, user) == recounted(project, user)
    assert shown(project, users[0])["project_done"] == 24 * 2


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
