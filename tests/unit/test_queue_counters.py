"""The annotate screen's progress comes from counters: exact after every write, O(1) to read."""

import importlib
import random
import re
from collections import Counter

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.models import (
    Assignment,
    AssignmentState,
    Candidate,
    Item,
    ProjectProgress,
    Task,
)
from annotation.selectors import annotation_progress, tasks_open_for_annotator
from annotation.services.assignments import assignment_skip, assignment_take_next
from annotation.services.candidates import candidates_add
from annotation.services.judgments import judgment_submit
from annotation.services.progress import progress_tasks_added
from tests.factories import ItemFactory, UserFactory, pair_task

pytestmark = pytest.mark.django_db

COUNT_OVER_TASKS = re.compile(r'COUNT\(.*FROM "annotation_task"', re.S)
KEYS = ("done", "skipped", "remaining", "project_done", "project_wanted")


def recounted(project, user) -> dict:
    """The progress figures counted from scratch, as the counters must keep them."""
    done = Counter(
        Assignment.objects.filter(task__project=project, state=AssignmentState.DONE).values_list(
            "task_id", flat=True
        )
    )
    own = Assignment.objects.filter(task__project=project, annotator=user)
    finished = set(own.exclude(state=AssignmentState.ACTIVE).values_list("task_id", flat=True))
    tasks = list(Task.objects.filter(project=project).values_list("pk", flat=True))
    return {
        "done": own.filter(state=AssignmentState.DONE).count(),
        "skipped": own.filter(state=AssignmentState.SKIPPED).count(),
        "remaining": sum(done[t] < project.overlap and t not in finished for t in tasks),
        "project_done": sum(done.values()),
        "project_wanted": len(tasks) * project.overlap,
    }


def shown(project, user) -> dict:
    progress = annotation_progress(project=project, annotator=user)
    return {key: progress[key] for key in KEYS}


def bulk_tasks(project, n: int) -> None:
    """``n`` pair tasks written in bulk, as an import does."""
    items = Item.objects.bulk_create(
        Item(project=project, prompt=f"q{i}", content_hash=f"h{i}") for i in range(n)
    )
    candidates = Candidate.objects.bulk_create(
        Candidate(item=item, position=p, text=f"answer {p}") for item in items for p in (0, 1)
    )
    pairs = [candidates[i : i + 2] for i in range(0, len(candidates), 2)]
    Task.objects.bulk_create(
        Task(project=project, item=item, candidate_ids=[a.pk, b.pk])
        for item, (a, b) in zip(items, pairs, strict=True)
    )
    progress_tasks_added(project_id=project.pk, count=n)


def _annotate_round(client, project) -> list[str]:
    """One next + one submit on the annotate screen; the SQL of both requests."""
    with CaptureQueriesContext(connection) as ctx:
        client.get(reverse("annotate-next", args=[project.pk]), HTTP_HX_REQUEST="true")
        assignment = Assignment.objects.filter(state=AssignmentState.ACTIVE).latest("id")
        url = reverse("annotate-submit", args=[project.pk, assignment.pk])
        response = client.post(url, {"choice": "left", "strength": "2"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return [q["sql"] for q in ctx.captured_queries]


def test_next_and_submit_run_the_same_queries_at_any_size_and_never_count_the_tasks(
    annotator_client, project
):
    bulk_tasks(project, 5)
    _annotate_round(annotator_client, project)  # counter rows exist from here on
    small = _annotate_round(annotator_client, project)
    bulk_tasks(project, 2000)
    large = _annotate_round(annotator_client, project)
    assert not [sql for sql in small + large if COUNT_OVER_TASKS.search(sql)]
    assert len(large) == len(small)


@pytest.mark.postgres
def test_the_pick_can_use_the_partial_index_of_incomplete_tasks(project, annotator):
    if connection.vendor != "postgresql":
        pytest.skip(
            "PostgreSQL is not reachable (the suite runs on SQLite): the plan check reads its EXPLAIN"
        )
    bulk_tasks(project, 50)
    query = tasks_open_for_annotator(project=project, annotator=annotator, now=project.created_at)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query[:1].explain()
    assert "task_queue_open" in plan, plan


def test_counters_stay_exact_through_submits_skips_overlap_and_expired_holds(project):
    project.overlap = 2
    project.save()
    for _ in range(8):
        pair_task(project)
    users = [UserFactory(username=f"mix{i}") for i in range(3)]
    rng = random.Random(7)
    for _ in range(40):
        user = rng.choice(users)
        assignment = assignment_take_next(project=project, annotator=user)
        if assignment is None:
            continue
        if rng.random() < 0.25:
            assignment_skip(assignment=assignment, annotator=user, reason="unclear")
        elif rng.random() < 0.9:
            judgment_submit(assignment=assignment, annotator=user, choice="a", strength=1)
        for other in users:
            assert shown(project, other) == recounted(project, other)
    assert ProjectProgress.objects.get(project=project).judgments_done > 0


def test_a_double_submit_and_a_double_skip_count_once(project, annotator):
    pair_task(project), pair_task(project)
    first = assignment_take_next(project=project, annotator=annotator)
    for _ in range(2):
        judgment_submit(assignment=first, annotator=annotator, choice="tie", strength=None)
    second = assignment_take_next(project=project, annotator=annotator)
    for _ in range(2):
        assignment_skip(assignment=second, annotator=annotator, reason="broken")
    assert shown(project, annotator) == recounted(project, annotator)
    assert (shown(project, annotator)["done"], shown(project, annotator)["skipped"]) == (1, 1)


def test_the_take_picks_the_first_task_by_id_that_the_annotator_may_take(project):
    project.overlap = 2
    project.save()
    tasks = [pair_task(project) for _ in range(5)]
    a, b, c = (UserFactory(username=n) for n in "abc")
    for user in (a, b):  # task 0 complete
        held = assignment_take_next(project=project, annotator=user)
        judgment_submit(assignment=held, annotator=user, choice="a", strength=1)
    assignment_skip(assignment=assignment_take_next(project=project, annotator=c), reason="x", annotator=c)
    assert assignment_take_next(project=project, annotator=c).task_id == tasks[2].pk  # 0 full, 1 skipped
    assert assignment_take_next(project=project, annotator=a).task_id == tasks[1].pk


def test_generated_and_imported_tasks_are_counted(project, annotator, tmp_path):
    from django.core.management import call_command

    from .import_samples import trl_rows, write_rows

    item = ItemFactory(project=project)
    candidates_add(item=item, texts=["one", "two", "three"], provenance={"kind": "model"})
    assert shown(project, annotator)["project_wanted"] == 3  # three pairs
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(4))
    call_command("import_preferences", str(path), "--project", project.name, "--no-progress")
    assert shown(project, annotator) == recounted(project, annotator)
    assert shown(project, annotator)["remaining"] == 7


def test_raising_the_overlap_in_the_settings_reopens_complete_tasks(manager_client, project, annotator):
    task = pair_task(project)
    held = assignment_take_next(project=project, annotator=annotator)
    judgment_submit(assignment=held, annotator=annotator, choice="a", strength=1)
    other = UserFactory(username="other")
    assert assignment_take_next(project=project, annotator=other) is None
    url = reverse("project-settings", args=[project.pk])
    data = {"action": "settings", "name": project.name, "overlap": 2, "assignment_ttl_minutes": 30}
    manager_client.post(url, {**data, "guidelines": project.guidelines})
    project.refresh_from_db()
    assert project.overlap == 2
    assert assignment_take_next(project=project, annotator=other).task_id == task.pk
    assert shown(project, other) == recounted(project, other)


def test_the_migration_fills_the_counters_of_existing_rows(project, annotator):
    migration = importlib.import_module("annotation.migrations.0009_queue_counters")
    for _ in range(3):
        pair_task(project)
    held = assignment_take_next(project=project, annotator=annotator)
    judgment_submit(assignment=held, annotator=annotator, choice="a", strength=1)
    Task.objects.update(complete=False)  # as the schema migration leaves them
    ProjectProgress.objects.all().delete()
    apps.get_model("annotation", "AnnotatorProgress").objects.all().delete()
    migration.fill_counters(apps, None)
    assert Task.objects.filter(complete=True).count() == 1
    assert shown(project, annotator) == recounted(project, annotator)
    assert shown(project, annotator)["remaining"] == 2
