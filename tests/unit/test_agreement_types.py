"""Agreement for rankings (Kendall's tau), steps and sentences (per position), and gold accuracy."""

import pytest

from annotation.models import Judgment, Task, TaskType
from annotation.services.agreement import (
    first_wrong_agreement,
    kendall_tau_b,
    nominal_alpha,
    position_agreement,
    project_type_agreement,
    ranking_agreement,
    step_labels_of,
)
from annotation.services.gold import item_gold_mark
from tests.factories import CandidateFactory, ItemFactory, UserFactory, pair_task


def test_kendall_tau_b_matches_hand_computed_values():
    assert kendall_tau_b({1: 0, 2: 1, 3: 2}, {1: 0, 2: 1, 3: 2}) == 1.0
    assert kendall_tau_b({1: 0, 2: 1, 3: 2}, {1: 2, 2: 1, 3: 0}) == -1.0
    # one swap of three: C = 2, D = 1 → 1/3
    assert kendall_tau_b({1: 0, 2: 1, 3: 2}, {1: 0, 2: 2, 3: 1}) == pytest.approx(1 / 3)
    # ties: x = (0,0,1) y = (0,1,2): C = 2, D = 0, Tx = 1 → 2 / sqrt(3 * 2)
    assert kendall_tau_b({1: 0, 2: 0, 3: 1}, {1: 0, 2: 1, 3: 2}) == pytest.approx(2 / 6**0.5)
    assert kendall_tau_b({1: 0, 2: 0}, {1: 0, 2: 0}) is None


def test_ranking_agreement_averages_tau_over_annotator_pairs_with_grouped_rankings():
    rankings = {
        1: {10: [[1], [2], [3]], 11: [[1], [2], [3]], 12: [[3], [2], [1]]},
        2: {10: [4, 5]},
    }
    result = ranking_agreement(rankings)
    assert result["pairs"] == 3
    assert result["tau"] == pytest.approx((1 - 1 - 1) / 3)


def test_position_agreement_per_step_only_counts_steps_both_labelled():
    labels = {
        1: {10: ["correct", "wrong"], 11: ["correct", "correct", "wrong"]},
        2: {10: ["correct"], 11: ["wrong"]},
    }
    result = position_agreement(labels)
    assert result["by_position"] == [
        {"position": 1, "pairs": 2, "agreement": 0.5},
        {"position": 2, "pairs": 1, "agreement": 0.0},
    ]
    assert result["agreement"] == pytest.approx(1 / 3)


def test_first_wrong_agreement_and_derived_step_labels():
    assert step_labels_of(None, 2) == ["correct", "correct", "wrong"]
    assert step_labels_of(None, None) is None
    labels = {1: {10: ["correct", "wrong"], 11: ["correct", "wrong"]}, 2: {10: ["correct"], 11: ["wrong"]}}
    assert first_wrong_agreement(labels) == {"pairs": 2, "agreement": 0.5}


def test_nominal_alpha_generic_labels():
    # same coincidence structure as the pairwise test: alpha = 4/9
    units = [{1: "f", 2: "f"}, {1: "h", 2: "h"}, {1: "f", 2: "h"}]
    assert nominal_alpha(units) == pytest.approx(4 / 9)
    assert nominal_alpha([{1: "f", 2: "f"}]) is None


@pytest.mark.django_db
def test_project_type_agreement_reads_sentence_labels_and_gold(project):
    project.task_type = TaskType.FACTUALITY
    project.save()
    ann1, ann2 = UserFactory(username="s1"), UserFactory(username="s2")
    item = ItemFactory(project=project)
    candidate = CandidateFactory(item=item, position=0, text="A. B.", sentences=["A.", "B."])
    task = Task.objects.create(project=project, item=item, candidate_ids=[candidate.pk])
    Judgment.objects.create(
        task=task, annotator=ann1, sentence_labels=[{"label": "factual"}, {"label": "hallucinated"}]
    )
    Judgment.objects.create(
        task=task, annotator=ann2, sentence_labels=[{"label": "factual"}, {"label": "factual"}]
    )
    item_gold_mark(item=item, payload={"sentence_labels": {str(candidate.pk): ["factual", "hallucinated"]}})
    report = project_type_agreement(project=project)
    assert report["sentences"]["by_position"] == [
        {"position": 1, "pairs": 1, "agreement": 1.0},
        {"position": 2, "pairs": 1, "agreement": 0.0},
    ]
    assert report["ranking"] is None and report["steps"] is None
    assert [(g["name"], g["accuracy"]) for g in report["gold"]] == [("s1", 1.0), ("s2", 0.5)]


@pytest.mark.django_db
def test_agreement_page_fragment_shows_tau_and_gold_accuracy(project, manager_client):
    project.task_type = TaskType.RANKING
    project.save()
    ann1, ann2 = UserFactory(username="r1"), UserFactory(username="r2")
    task = pair_task(project, texts=("x", "y"))
    first, second = task.candidate_ids
    Judgment.objects.create(task=task, annotator=ann1, ranking=[[first], [second]])
    Judgment.objects.create(task=task, annotator=ann2, ranking=[[second], [first]])
    gold = pair_task(project)
    item_gold_mark(item=gold.item, payload={"ranking": [[gold.candidate_ids[0]], [gold.candidate_ids[1]]]})
    Judgment.objects.create(task=gold, annotator=ann1, choice="b", strength=1)
    from django.urls import reverse

    page = manager_client.get(reverse("agreement", args=[project.pk]))
    assert reverse("agreement-types", args=[project.pk]) in page.content.decode()
    fragment = manager_client.get(reverse("agreement-types", args=[project.pk])).content.decode()
    assert 'id="ranking-tau"' in fragment and "-1.000" in fragment
    assert 'id="gold-accuracy"' in fragment and "r1" in fragment and "0.0%" in fragment


@pytest.mark.django_db
@pytest.mark.parametrize("task_type", ["ranking", "stepwise", "factuality"])
def test_a_typed_projects_agreement_page_leads_with_its_own_measure(manager, client, task_type):
    from tests.factories import MembershipFactory, ProjectFactory

    project = ProjectFactory(task_type=task_type)
    MembershipFactory(project=project, user=manager, role="manager")
    client.force_login(manager)
    html = client.get(f"/projects/{project.pk}/agreement/").content.decode()
    slot, pairwise = html.index('id="agreement-types-slot"'), html.index("Krippendorff")
    assert slot < pairwise and '<details id="pairwise-agreement">' in html


@pytest.mark.django_db
def test_a_pairwise_projects_agreement_page_leads_with_alpha(manager_client, project):
    html = manager_client.get(f"/projects/{project.pk}/agreement/").content.decode()
    assert html.index("Krippendorff") < html.index('id="agreement-types-slot"')
    assert 'id="pairwise-agreement"' not in html
