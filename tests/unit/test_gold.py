"""Gold items: marking with an expected judgment, silent serving at the gold rate, scoring annotators."""

import pytest
from django.core.exceptions import ValidationError

from annotation.models import AssignmentState, Item, Judgment, Task, TaskType
from annotation.services import assignments
from annotation.services.assignments import assignment_take_next
from annotation.services.gold import (
    gold_accuracy,
    gold_flip_rate,
    gold_score,
    item_gold_mark,
    item_gold_unmark,
    project_gold_rate_set,
    project_gold_results,
    ranking_concordance,
)
from tests.factories import CandidateFactory, ItemFactory, UserFactory, pair_task

pytestmark = pytest.mark.django_db


def gold_pair(project, better_first=True):
    task = pair_task(project)
    first, second = task.candidate_ids
    ranking = [[first], [second]] if better_first else [[second], [first]]
    item_gold_mark(item=task.item, payload={"ranking": ranking})
    return task


def judge(task, user, **fields):
    from annotation.models import Assignment

    Assignment.objects.create(
        task=task,
        annotator=user,
        state=AssignmentState.DONE,
        shown_order=task.candidate_ids,
        expires_at="2030-01-01T00:00:00Z",
    )
    return Judgment.objects.create(task=task, annotator=user, **fields)


def test_mark_validates_the_ranking_against_the_items_candidates(project):
    task = pair_task(project)
    with pytest.raises(ValidationError, match="exactly once"):
        item_gold_mark(item=task.item, payload={"ranking": [[task.candidate_ids[0]]]})
    with pytest.raises(ValidationError, match="expected judgment"):
        item_gold_mark(item=task.item, payload={})
    item = item_gold_mark(item=task.item, payload={"ranking": [task.candidate_ids[1], task.candidate_ids[0]]})
    item.refresh_from_db()
    assert item.is_gold and item.gold_payload == {
        "ranking": [[task.candidate_ids[1]], [task.candidate_ids[0]]]
    }
    item_gold_unmark(item=item)
    item.refresh_from_db()
    assert not item.is_gold and item.gold_payload is None


def test_mark_validates_step_index_and_sentence_label_count(project):
    item = ItemFactory(project=project)
    steps = CandidateFactory(item=item, position=0, steps=["a", "b"])
    facts = CandidateFactory(item=item, position=1, text="One. Two.", sentences=["One.", "Two."])
    with pytest.raises(ValidationError, match="1 to 2"):
        item_gold_mark(item=item, payload={"first_wrong_step": {str(steps.pk): 2}})
    with pytest.raises(ValidationError, match="give 2 labels"):
        item_gold_mark(item=item, payload={"sentence_labels": {str(facts.pk): ["f"]}})
    item_gold_mark(
        item=item,
        payload={"first_wrong_step": {str(steps.pk): None}, "sentence_labels": {str(facts.pk): [True, "h"]}},
    )
    assert item.gold_payload["sentence_labels"] == {str(facts.pk): ["factual", "hallucinated"]}


def test_gold_rate_must_be_between_zero_and_half(project):
    with pytest.raises(ValidationError):
        project_gold_rate_set(project=project, rate=0.9)
    assert project_gold_rate_set(project=project, rate=0.2).gold_rate == 0.2


def test_gold_draw_serves_gold_first_to_every_annotator_ignoring_overlap(project, monkeypatch):
    regular = pair_task(project)
    gold = gold_pair(project)
    project_gold_rate_set(project=project, rate=0.5)
    users = [UserFactory(username=f"g{i}") for i in range(2)]
    monkeypatch.setattr(assignments._rng, "random", lambda: 0.0)  # always draw "gold"
    served = [assignment_take_next(project=project, annotator=u).task_id for u in users]
    assert served == [gold.pk, gold.pk]  # overlap 1, yet both annotators get the gold check
    assert regular.pk not in served


def test_without_a_gold_draw_gold_tasks_are_not_served_as_regular_work(project, annotator, monkeypatch):
    gold = gold_pair(project)
    regular = pair_task(project)
    project_gold_rate_set(project=project, rate=0.1)
    monkeypatch.setattr(assignments._rng, "random", lambda: 0.99)  # never draw "gold"
    first = assignment_take_next(project=project, annotator=annotator)
    first.state = AssignmentState.DONE
    first.save()
    second = assignment_take_next(project=project, annotator=annotator)
    assert first.task_id == regular.pk and gold.pk < regular.pk
    assert second is None


def test_gold_rate_zero_keeps_the_plain_queue_order(project, annotator):
    gold = gold_pair(project)
    pair_task(project)
    assert assignment_take_next(project=project, annotator=annotator).task_id == gold.pk


def test_gold_score_for_each_judgment_kind():
    assert gold_score({"ranking": [[1], [2]]}, [1, 2], {"choice": "a"}) == 1.0
    assert gold_score({"ranking": [[1], [2]]}, [2, 1], {"choice": "a"}) == 0.0
    assert gold_score({"ranking": [[1, 2]]}, [1, 2], {"choice": "tie"}) == 1.0
    assert gold_score({"ranking": [[1], [2], [3]]}, [1, 2, 3], {"ranking": [[1], [3], [2]]}) == pytest.approx(
        2 / 3
    )
    assert (
        gold_score(
            {"first_wrong_step": {"5": 1}}, [5], {"step_labels": ["correct", "wrong"], "first_wrong_step": 1}
        )
        == 1.0
    )
    assert (
        gold_score({"first_wrong_step": {"5": None}}, [5], {"step_labels": ["wrong"], "first_wrong_step": 0})
        == 0.0
    )
    labels = [{"label": "factual"}, {"label": "not_claim"}]
    assert (
        gold_score({"sentence_labels": {"7": ["factual", "hallucinated"]}}, [7], {"sentence_labels": labels})
        == 0.5
    )
    assert gold_score({"ranking": [[1], [2]]}, [8], {"sentence_labels": labels}) is None


def test_ranking_concordance_counts_annotator_ties_as_half():
    assert ranking_concordance([[1], [2]], [[1, 2]]) == 0.5
    assert ranking_concordance([[1, 2]], [[1], [2]]) is None


def test_gold_accuracy_and_flip_rate_per_annotator(project):
    good, bad = UserFactory(username="good"), UserFactory(username="bad")
    tasks = [gold_pair(project) for _ in range(4)]
    for task in tasks:
        judge(task, good, choice="a", strength=2)
    for task, choice in zip(tasks, ["a", "b", "b", "tie"], strict=True):
        judge(task, bad, choice=choice, strength=1)
    not_gold = pair_task(project)
    judge(not_gold, bad, choice="b", strength=1)
    accuracy = gold_accuracy(project_gold_results(project=project))
    assert accuracy[good.pk]["accuracy"] == 1.0 and accuracy[good.pk]["gold"] == 4
    assert accuracy[bad.pk]["accuracy"] == 0.25 and accuracy[bad.pk]["binary"] == 3
    flip = gold_flip_rate(accuracy)
    assert flip == {"epsilon": pytest.approx(2 / 7), "votes": 7}


def test_superseded_gold_judgments_do_not_count(project, annotator):
    task = gold_pair(project)
    old = judge(task, annotator, choice="b", strength=1)
    Judgment.objects.create(task=task, annotator=annotator, choice="a", strength=1, supersedes=old)
    assert project_gold_results(project=project) == [(annotator.pk, 1.0, False)]


def test_factuality_gold_scores_sentence_labels(project, annotator):
    project.task_type = TaskType.FACTUALITY
    project.save()
    item = ItemFactory(project=project)
    candidate = CandidateFactory(item=item, position=0, text="A. B.", sentences=["A.", "B."])
    task = Task.objects.create(project=project, item=item, candidate_ids=[candidate.pk])
    item_gold_mark(
        item=Item.objects.get(pk=item.pk), payload={"sentence_labels": {str(candidate.pk): ["f", "h"]}}
    )
    judge(task, annotator, sentence_labels=[{"label": "factual"}, {"label": "hallucinated"}])
    assert project_gold_results(project=project) == [(annotator.pk, 1.0, None)]


def test_gold_page_marks_an_item_with_ranks_and_sets_the_rate(project, manager_client):
    from django.urls import reverse

    task = pair_task(project)
    first, second = task.candidate_ids
    assert manager_client.get(reverse("gold-list", args=[project.pk])).status_code == 200
    manager_client.post(
        reverse("gold-mark", args=[project.pk, task.item_id]), {f"rank_{first}": "2", f"rank_{second}": "1"}
    )
    item = Item.objects.get(pk=task.item_id)
    assert item.is_gold and item.gold_payload == {"ranking": [[second], [first]]}
    manager_client.post(reverse("gold-rate", args=[project.pk]), {"gold_percent": "10"})
    project.refresh_from_db()
    assert project.gold_rate == pytest.approx(0.1)
    bad = manager_client.post(reverse("gold-rate", args=[project.pk]), {"gold_percent": "80"}, follow=True)
    assert "from 0 to 50" in bad.content.decode()
    manager_client.post(reverse("gold-mark", args=[project.pk, task.item_id]), {"unmark": "1"})
    assert not Item.objects.get(pk=task.item_id).is_gold


def test_gold_form_with_incomplete_ranks_shows_a_message(project, manager_client):
    from django.urls import reverse

    task = pair_task(project)
    response = manager_client.post(
        reverse("gold-mark", args=[project.pk, task.item_id]),
        {f"rank_{task.candidate_ids[0]}": "1"},
        follow=True,
    )
    assert "expected judgment" in response.content.decode()
    assert not Item.objects.get(pk=task.item_id).is_gold


def test_frozen_version_stats_carry_the_gold_flip_rate_and_accuracy(project):
    from annotation.services.versions import FreezeRule, dataset_version_freeze

    good, bad = UserFactory(username="good"), UserFactory(username="bad")
    for choice_of_bad in ("a", "b"):
        task = gold_pair(project)
        judge(task, good, choice="a", strength=2)
        judge(task, bad, choice=choice_of_bad, strength=2)
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert version.stats["label_flip_rate_gold"] == pytest.approx(0.25)
    assert version.stats["label_flip_gold_votes"] == 4
    assert version.stats["gold_accuracy"] == {"good": 1.0, "bad": 0.5}


@pytest.mark.parametrize("task_type", [TaskType.PAIRWISE, TaskType.STEPWISE, TaskType.FACTUALITY])
def test_gold_page_offers_the_fields_of_the_project_type(project, manager_client, task_type):
    from django.urls import reverse

    project.task_type = task_type
    project.save()
    item = ItemFactory(project=project)
    candidate = CandidateFactory(
        item=item, position=0, text="One. <b>Two</b>.", sentences=["One.", "<b>Two</b>."]
    )
    page = manager_client.get(reverse("gold-list", args=[project.pk])).content.decode()
    expected = {"pairwise": "rank_", "stepwise": "wrong_", "factuality": "labels_"}[task_type]
    assert f'name="{expected}{candidate.pk}"' in page
    assert "<b>Two</b>" not in page  # model text is escaped


def test_stepwise_gold_form_marks_the_first_wrong_step(project, manager_client):
    from django.urls import reverse

    project.task_type = TaskType.STEPWISE
    project.save()
    item = ItemFactory(project=project)
    candidate = CandidateFactory(item=item, position=0, steps=["1 + 1 = 2", "2 + 2 = 5"])
    manager_client.post(reverse("gold-mark", args=[project.pk, item.pk]), {f"wrong_{candidate.pk}": "2"})
    item.refresh_from_db()
    assert item.gold_payload == {"first_wrong_step": {str(candidate.pk): 1}}


def test_gold_form_is_prefilled_with_the_expected_judgment(project, manager_client):
    from django.urls import reverse

    task = gold_pair(project, better_first=False)
    first, second = task.candidate_ids
    page = manager_client.get(reverse("gold-list", args=[project.pk])).content.decode()
    assert f'name="rank_{first}" value="2"' in page and f'name="rank_{second}" value="1"' in page
