import math

import pytest
from django.urls import reverse

from annotation.models import Judgment, JudgmentSource
from annotation.services.agreement import (
    cohen_kappa,
    flip_rate,
    krippendorff_alpha,
    majority_agreement,
    pairwise_kappas,
    project_agreement,
    project_votes,
    strict_majority,
)
from tests.factories import pair_task
from tests.unit.test_versions import fast_user


def test_cohen_kappa_matches_hand_computed_value():
    # observed 4/5; chance (3*2 + 2*3) / 25 = 0.48; kappa = (0.8 - 0.48) / 0.52
    pairs = list(zip(["a", "a", "b", "b", "a"], ["a", "b", "b", "b", "a"], strict=True))
    assert cohen_kappa(pairs) == pytest.approx(0.32 / 0.52)


def test_cohen_kappa_is_one_for_perfect_agreement_and_none_without_variation():
    assert cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None
    assert cohen_kappa([]) is None


def test_krippendorff_alpha_matches_hand_computed_nominal_value():
    # coincidences: o_aa = 2, o_bb = 2, o_ab = o_ba = 1; Do = 2/6, De = 2*3*3/(6*5); alpha = 1 - Do/De = 4/9
    votes = {1: {10: "a", 11: "a"}, 2: {10: "b", 11: "b"}, 3: {10: "a", 11: "b"}}
    assert krippendorff_alpha(votes) == pytest.approx(4 / 9)


def test_krippendorff_alpha_ignores_single_vote_tasks_and_handles_missing_raters():
    votes = {1: {10: "a", 11: "a"}, 2: {10: "b", 12: "b"}, 3: {10: "a", 11: "b"}, 4: {12: "tie"}}
    assert krippendorff_alpha(votes) == pytest.approx(4 / 9)


def test_krippendorff_alpha_is_none_without_overlap_or_without_variation():
    assert krippendorff_alpha({1: {10: "a"}, 2: {11: "b"}}) is None
    assert krippendorff_alpha({1: {10: "a", 11: "a"}}) is None


def test_pairwise_kappas_only_for_pairs_with_enough_shared_tasks():
    votes = {t: {1: "a", 2: "a" if t % 2 else "b"} for t in range(6)}
    votes[99] = {1: "a", 3: "a"}
    result = pairwise_kappas(votes, min_shared=5)
    assert [(r["a"], r["b"], r["shared"]) for r in result] == [(1, 2, 6)]
    assert result[0]["agreement"] == pytest.approx(0.5)


def test_strict_majority_needs_a_unique_winner():
    assert strict_majority(["a", "a", "b"]) == "a"
    assert strict_majority(["a", "b"]) is None
    assert strict_majority([]) is None


def test_majority_agreement_is_leave_one_out():
    votes = {1: {1: "a", 2: "a", 3: "b"}, 2: {1: "a", 2: "a", 3: "a"}}
    result = majority_agreement(votes)
    # on task 1, annotators 1 and 2 see others split (a, b): no majority, skipped
    assert result[1] == {"tasks": 1, "agree": 1, "rate": 1.0}
    assert result[3] == {"tasks": 2, "agree": 1, "rate": 0.5}


def test_flip_rate_inverts_pairwise_disagreement():
    votes = {t: {1: "a", 2: "b" if t < 2 else "a"} for t in range(10)}
    votes[50] = {1: "tie", 2: "a"}  # not binary: ignored
    result = flip_rate(votes, min_pairs=5)
    assert result["pairs"] == 10
    assert result["disagreement"] == pytest.approx(0.2)
    eps = result["epsilon"]
    assert eps == pytest.approx((1 - math.sqrt(0.6)) / 2)
    assert 2 * eps * (1 - eps) == pytest.approx(0.2)


def test_flip_rate_counts_every_vote_pair_of_a_task():
    result = flip_rate({1: {1: "a", 2: "a", 3: "b"}}, min_pairs=1)
    assert result["pairs"] == 3
    assert result["disagreement"] == pytest.approx(2 / 3)
    assert result["epsilon"] == 0.5


def test_flip_rate_is_none_with_too_little_data():
    assert flip_rate({1: {1: "a", 2: "b"}}, min_pairs=10)["epsilon"] is None
    assert flip_rate({}, min_pairs=0)["epsilon"] is None


def test_project_votes_use_current_human_judgments_only(project):
    alice, bob = fast_user("alice"), fast_user("bob")
    task = pair_task(project)
    old = Judgment.objects.create(task=task, annotator=alice, choice="a", strength=2)
    Judgment.objects.create(task=task, annotator=alice, choice="b", strength=2, supersedes=old)
    Judgment.objects.create(task=task, annotator=bob, choice="tie", strength=1)
    Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, choice="a")
    votes, names = project_votes(project=project)
    assert votes == {task.pk: {alice.pk: "b", bob.pk: "tie"}}
    assert names == {alice.pk: "alice", bob.pk: "bob"}


def test_project_agreement_reports_every_figure(project):
    users = [fast_user(f"rater{i}") for i in range(3)]
    for n in range(6):
        task = pair_task(project)
        for user, choice in zip(users, ["a", "a", "b" if n == 0 else "a"], strict=True):
            Judgment.objects.create(task=task, annotator=user, choice=choice, strength=2)
    report = project_agreement(project=project, min_shared=5, min_pairs=5)
    assert report.tasks == 6 and report.votes == 18
    assert report.flip["pairs"] == 18 and report.flip["epsilon"] is not None
    assert report.majority[users[2].pk]["agree"] == 5
    assert len(report.kappas) == 3


def test_agreement_page_shows_figures_to_managers_only(manager_client, project, annotator):
    from annotation.models import Membership

    users = [fast_user(f"<i>r{i}</i>") for i in range(2)]
    for n in range(5):
        task = pair_task(project)
        for user in users:
            Judgment.objects.create(task=task, annotator=user, choice="a" if n else "b", strength=2)
    page = manager_client.get(reverse("agreement", args=[project.pk])).content.decode()
    assert 'id="annotator-agreement"' in page and 'id="pairwise-kappa"' in page
    assert "&lt;i&gt;r0&lt;/i&gt;" in page and "<i>r0</i>" not in page
    Membership.objects.create(project=project, user=annotator, role="annotator")
    manager_client.force_login(annotator)
    assert manager_client.get(reverse("agreement", args=[project.pk])).status_code == 403
