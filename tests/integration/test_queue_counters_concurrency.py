"""The queue counters under concurrent annotators on PostgreSQL: no increment lost, none doubled."""

import random
import threading
import time

import pytest
from django.db import connection, connections
from django.utils import timezone

from annotation.models import Assignment, AssignmentState
from annotation.selectors import tasks_open_for_annotator
from annotation.services.assignments import assignment_skip, assignment_take_next
from annotation.services.judgments import judgment_submit
from tests.factories import ProjectFactory, UserFactory, pair_task
from tests.unit.test_queue_counters import recounted, shown

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ANNOTATORS = 6
TASKS = 24
OVERLAP = 2


@pytest.fixture(autouse=True)
def _needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL is not reachable: the race needs real row locks")


def _work(project, user, seed, errors, start):
    rng = random.Random(seed)
    try:
        start.wait()
        while True:
            assignment = assignment_take_next(project=project, annotator=user)
            if assignment is None:
                if not tasks_open_for_annotator(project=project, annotator=user, now=timezone.now()).exists():
                    return
                time.sleep(0.01)
                continue
            if rng.random() < 0.2:
                assignment_skip(assignment=assignment, annotator=user, reason="not sure")
            else:
                judgment_submit(assignment=assignment, annotator=user, choice="b", strength=3)
    except Exception as exc:  # reported by the main thread
        errors.append(exc)
    finally:
        connections.close_all()


def test_counters_match_a_recount_after_concurrent_submits_and_skips():
    project = ProjectFactory(overlap=OVERLAP)
    for _ in range(TASKS):
        pair_task(project)
    users = [UserFactory(username=f"counter{i}") for i in range(ANNOTATORS)]
    errors, start = [], threading.Barrier(ANNOTATORS)
    threads = [
        threading.Thread(target=_work, args=(project, user, i, errors, start)) for i, user in enumerate(users)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert Assignment.objects.filter(state=AssignmentState.SKIPPED).exists()
    for user in users:
        assert shown(project, user) == recounted(project, user)
    assert shown(project, users[0])["project_done"] == TASKS * OVERLAP
