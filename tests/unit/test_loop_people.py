"""Loops labelled by people: a round posts its samples as tasks of the loop's project, waits while
annotators judge them in the usual queue, and trains on rows made of their votes (``_people_label``);
the annotation side's ``candidates_post`` and ``rows_for_tasks`` on their own."""

# ruff: noqa: F811 - ``registry`` is test_loops' fixture, imported to be requested by name
import threading
import time

import pytest
from django.db import connections

from annotation.models import Candidate, Item, Task
from annotation.services.assignments import assignment_take_next
from annotation.services.candidates import candidates_post
from annotation.services.judgments import judgment_submit
from annotation.services.versions import FreezeRule, rows_for_tasks
from jobs.models import JobState
from tests.factories import MembershipFactory
from tests.unit.test_loops import _create, registry  # noqa: F401
from training.models import Labeller, Loop, LoopRound, LoopStage
from training.services import loops as loop_service
from training.services.loops import loop_cancel, loop_run


def _judge_all(project, annotator, choice="a") -> int:
    done = 0
    while (assignment := assignment_take_next(project=project, annotator=annotator)) is not None:
        judgment_submit(assignment=assignment, annotator=annotator, choice=choice, strength=2)
        done += 1
    return done


@pytest.mark.django_db
def test_candidates_post_reuses_the_prompts_item_makes_one_when_missing_and_is_idempotent(project):
    asked = Item.objects.create(project=project, prompt="say hi", content_hash="h1")
    provenance = {"kind": "loop"}
    first = candidates_post(
        project=project,
        prompts=["say hi", "new one"],
        texts=[["a", "b"], ["c", "d"]],
        batch="r1",
        provenance=provenance,
    )
    assert len(first) == 2 and Item.objects.filter(project=project).count() == 2
    assert Candidate.objects.filter(item=asked, provenance__batch="r1").count() == 2
    again = candidates_post(
        project=project,
        prompts=["say hi", "new one"],
        texts=[["x", "y"], ["z", "w"]],
        batch="r1",
        provenance=provenance,
    )
    assert again == first and Candidate.objects.filter(item__project=project).count() == 4
    other = candidates_post(
        project=project, prompts=["say hi"], texts=[["e", "f"]], batch="r2", provenance=provenance
    )
    assert set(other).isdisjoint(first) and Task.objects.filter(project=project).count() == 3


@pytest.mark.django_db
def test_rows_for_tasks_reads_only_those_tasks_votes(project, annotator):
    MembershipFactory(project=project, user=annotator, role="annotator")
    ours = candidates_post(
        project=project, prompts=["p1"], texts=[["good", "bad"]], batch="ours", provenance={}
    )
    candidates_post(project=project, prompts=["p2"], texts=[["x", "y"]], batch="theirs", provenance={})
    assert _judge_all(project, annotator) == 2
    rows, stats = rows_for_tasks(project=project, task_ids=ours, rule=FreezeRule())
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [("p1", "good", "bad")]
    assert stats["tasks_considered"] == 1 and stats["votes"] == 1


def _worker(loop_id: int) -> threading.Thread:
    """``loop_run`` in a thread of its own, as a worker would, closing the thread's database connection."""

    def run():
        try:
            loop_run(loop_id=loop_id)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_people_round_waits_for_judgments_then_trains_on_them(
    registry, manager, annotator, project, monkeypatch
):
    monkeypatch.setattr(loop_service, "WAIT_SECONDS", 0.1)
    MembershipFactory(project=project, user=annotator, role="annotator")
    loop = _create(registry, manager, Labeller.PEOPLE, rounds=1, k=2, max_prompts=4, eval_prompts=2)
    worker = _worker(loop.pk)
    try:
        assert _wait_for(
            lambda: (
                "judgments_needed" in (LoopRound.objects.filter(loop=loop).first() or LoopRound()).labelling
            )
        )
        one = LoopRound.objects.get(loop=loop)
        assert one.stage == LoopStage.LABEL and one.labelling == {"tasks": 4, "judgments_needed": 4}
        time.sleep(0.5)
        assert Loop.objects.get(pk=loop.pk).stage == LoopStage.LABEL  # still waiting: nothing judged yet
        assert _judge_all(project, annotator) == 4
    finally:
        worker.join(timeout=120)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    one = LoopRound.objects.get(loop=loop)
    assert one.labelling["judgments"] == 4 and one.labelling["pairs"] == 4 and one.labelling["votes"] == 4
    version = one.dataset_version
    assert version.rule["labeller"] == "people" and version.rule["pair_rule"] == {
        "rule": "annotators",
        "min_votes": 1,
    }
    texts = set(Candidate.objects.filter(provenance__loop=loop.pk).values_list("text", flat=True))
    assert all(e.row["chosen"] in texts for e in version.examples.all())
    assert one.training_job.state == JobState.SUCCEEDED and one.evaluation["n"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_waiting_people_round_can_be_cancelled(registry, manager, monkeypatch):
    monkeypatch.setattr(loop_service, "WAIT_SECONDS", 0.1)
    loop = _create(
        registry, manager, Labeller.PEOPLE, rounds=1, k=2, max_prompts=2, eval_prompts=2, min_judgments=1
    )
    worker = _worker(loop.pk)
    try:
        assert _wait_for(
            lambda: (
                Loop.objects.get(pk=loop.pk).stage == LoopStage.LABEL
                and LoopRound.objects.filter(loop=loop, labelling__has_key="judgments_needed").exists()
            )
        )
        loop_cancel(loop=loop)
    finally:
        worker.join(timeout=60)
    loop.refresh_from_db()
    assert (
        loop.state == JobState.CANCELLED
        and LoopRound.objects.get(loop=loop).labelling["judgments_needed"] == 1
    )
