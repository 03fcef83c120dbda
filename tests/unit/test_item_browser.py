"""Curation pages: the item browser (filters, counts, search, pages), an item's page (every judgment,
superseded ones marked, everything escaped) and the disagreement queue, for managers only."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Item, Judgment, JudgmentSource, TaskType
from annotation.selectors_items import PAGE_SIZE, disagreeing_tasks, vote_key
from tests import screen_data as sd
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = pytest.mark.django_db

XSS = '<script>alert("x")</script><img src="https://tracker.example/p.png">'


@pytest.fixture
def raters(project):
    users = [UserFactory(username=name) for name in ("ann", "bob", "cat")]
    for user in users:
        MembershipFactory(project=project, user=user, role="annotator")
    return users


def vote(task, user, choice="a", **fields):
    fields.setdefault("strength", 2 if choice in ("a", "b") else None)
    return Judgment.objects.create(task=task, annotator=user, choice=choice, **fields)


def skip(task, user, reason="unclear"):
    return Assignment.objects.create(
        task=task,
        annotator=user,
        state=AssignmentState.SKIPPED,
        shown_order=task.candidate_ids,
        skip_reason=reason,
        expires_at=timezone.now() + timedelta(minutes=30),
    )


@pytest.fixture
def curated(project, raters):
    """Five pairs: agreed, disagreed, unjudged, gold and skipped, and imported-only."""
    ann, bob, _ = raters
    agreed = pair_task(project, prompt="agreed prompt")
    vote(agreed, ann, "a")
    vote(agreed, bob, "a")
    split = pair_task(project, prompt="split prompt", texts=("zebra answer", "other"))
    vote(split, ann, "a")
    vote(split, bob, "b")
    unjudged = pair_task(project, prompt="nobody judged this")
    gold = pair_task(project, prompt="gold prompt")
    Item.objects.filter(pk=gold.item_id).update(is_gold=True)
    skip(gold, ann)
    imported = pair_task(project, prompt="imported prompt")
    Judgment.objects.create(task=imported, source=JudgmentSource.IMPORTED, choice="b")
    return {"agreed": agreed, "split": split, "unjudged": unjudged, "gold": gold, "imported": imported}


def browse(client, project, **params):
    return client.get(reverse("item-list", args=[project.pk]), params)


def listed(response) -> list[int]:
    return [row.pk for row in response.context["page"].object_list]


def counts(response) -> dict[str, int]:
    return {name: count for name, _, count in response.context["filters"]}


# --- disagreement ---------------------------------------------------------------------------------


def test_vote_key_compares_each_type_by_what_decides_its_rows():
    assert vote_key("a", None, None, None, None) == vote_key("a", None, None, None, None)
    assert vote_key("", [[3], [1, 2]], None, None, None) == vote_key("", [3, [2, 1]], None, None, None)
    assert vote_key("", [[3], [1, 2]], None, None, None) != vote_key("", [[3], [1], [2]], None, None, None)
    # full step labels and a bare first wrong step agree when they name the same step
    assert vote_key("", None, ["correct", "wrong"], None, None) == vote_key("", None, None, 1, None)
    assert vote_key("", None, None, None, ["f", "H"]) == vote_key("", None, None, None, [True, False])
    assert vote_key("", None, None, None, None) is None


def test_pairwise_disagreement_is_current_human_choices_that_differ(project, raters):
    ann, bob, cat = raters
    same = pair_task(project)
    vote(same, ann, "tie")
    vote(same, bob, "tie")
    differ = pair_task(project)
    vote(differ, ann, "a")
    vote(differ, bob, "a")
    vote(differ, cat, "both_bad")
    corrected = pair_task(project)  # bob's b was corrected to a: they agree now
    vote(corrected, ann, "a")
    vote(corrected, bob, "a", supersedes=vote(corrected, bob, "b"))
    now_split = pair_task(project)  # ann's a was corrected to b
    vote(now_split, ann, "b", supersedes=vote(now_split, ann, "a"))
    vote(now_split, bob, "a")
    lone = pair_task(project)  # one human vote against an imported one is not a disagreement
    vote(lone, ann, "a")
    Judgment.objects.create(task=lone, source=JudgmentSource.IMPORTED, choice="b")
    assert disagreeing_tasks(project=project) == {differ.pk: differ.item_id, now_split.pk: now_split.item_id}


def test_ranking_steps_and_sentences_disagree_by_their_own_votes(raters):
    ann, bob, _ = raters
    ranking = ProjectFactory(task_type=TaskType.RANKING)
    same, differ = sd.ranking_task(ranking), sd.ranking_task(ranking)
    a, b, c = same.candidate_ids
    Judgment.objects.create(task=same, annotator=ann, ranking=[[a], [b, c]])
    Judgment.objects.create(task=same, annotator=bob, ranking=[[a], [c, b]])
    x, y, z = differ.candidate_ids
    Judgment.objects.create(task=differ, annotator=ann, ranking=[[x], [y], [z]])
    Judgment.objects.create(task=differ, annotator=bob, ranking=[[x], [z], [y]])
    assert set(disagreeing_tasks(project=ranking)) == {differ.pk}

    steps = ProjectFactory(task_type=TaskType.STEPWISE)
    agree, split = sd.steps_task(steps), sd.steps_task(steps)
    Judgment.objects.create(task=agree, annotator=ann, step_labels=["correct", "wrong", "wrong"])
    Judgment.objects.create(task=agree, annotator=bob, first_wrong_step=1)
    Judgment.objects.create(task=split, annotator=ann, first_wrong_step=0)
    Judgment.objects.create(task=split, annotator=bob, first_wrong_step=2)
    assert set(disagreeing_tasks(project=steps)) == {split.pk}

    facts = ProjectFactory(task_type=TaskType.FACTUALITY)
    agree, split = sd.facts_task(facts), sd.facts_task(facts)
    Judgment.objects.create(task=agree, annotator=ann, sentence_labels=["factual", "hallucinated"])
    Judgment.objects.create(task=agree, annotator=bob, sentence_labels=["f", "h"])
    Judgment.objects.create(task=split, annotator=ann, sentence_labels=["factual", "hallucinated"])
    Judgment.objects.create(task=split, annotator=bob, sentence_labels=["factual", "factual"])
    assert set(disagreeing_tasks(project=facts)) == {split.pk}


# --- the item browser -----------------------------------------------------------------------------


def test_filters_list_their_items_with_a_count_each(manager_client, project, curated):
    response = browse(manager_client, project)
    assert response.status_code == 200
    assert counts(response) == {
        "all": 5,
        "judged": 3,
        "unjudged": 2,
        "disagreement": 1,
        "gold": 1,
        "skipped": 1,
    }
    item = {name: task.item_id for name, task in curated.items()}
    expected = {
        "judged": [item["agreed"], item["split"], item["imported"]],
        "unjudged": [item["unjudged"], item["gold"]],
        "disagreement": [item["split"]],
        "gold": [item["gold"]],
        "skipped": [item["gold"]],
        "all": sorted(item.values()),
    }
    for name, ids in expected.items():
        assert listed(browse(manager_client, project, filter=name)) == ids, name
    assert listed(browse(manager_client, project, filter="nonsense")) == sorted(item.values())
    html = browse(manager_client, project).content.decode()
    assert f'href="{reverse("item-detail", args=[project.pk, item["split"]])}"' in html


def test_search_matches_prompt_or_response_text_and_counts_follow_it(manager_client, project, curated):
    by_prompt = browse(manager_client, project, q="GOLD PROMPT")
    assert listed(by_prompt) == [curated["gold"].item_id]
    assert counts(by_prompt) == {
        "all": 1,
        "judged": 0,
        "unjudged": 1,
        "disagreement": 0,
        "gold": 1,
        "skipped": 1,
    }
    by_response = browse(manager_client, project, q="zebra", filter="disagreement")
    assert listed(by_response) == [curated["split"].item_id]
    assert counts(by_response)["disagreement"] == 1
    assert listed(browse(manager_client, project, q="no such words")) == []


def test_browser_pages_by_fifty(manager_client, project):
    for _ in range(PAGE_SIZE + 3):
        pair_task(project)
    first = browse(manager_client, project)
    second = browse(manager_client, project, page=2)
    assert len(listed(first)) == PAGE_SIZE and len(listed(second)) == 3
    assert set(listed(first)).isdisjoint(listed(second))
    assert "page=2" in first.content.decode()
    assert listed(browse(manager_client, project, page=99)) == listed(second)  # past the end: the last page


def test_curation_pages_read_in_a_fixed_number_of_queries(
    manager_client, project, raters, django_assert_max_num_queries
):
    ann, bob, cat = raters
    for i in range(12):
        task = pair_task(project, texts=(f"left {i}", f"right {i}"))
        vote(task, ann, "a")
        vote(task, bob, "b" if i % 2 else "a")
        skip(pair_task(project), ann)
    # session, user, project, then: votes, counts, page count, page rows
    with django_assert_max_num_queries(7):
        assert len(listed(browse(manager_client, project))) == 24
    with django_assert_max_num_queries(7):
        assert len(listed(browse(manager_client, project, filter="disagreement", q="right"))) == 6
    with django_assert_max_num_queries(7):  # votes, tasks, their judgments, their candidates
        queue = manager_client.get(reverse("disagreement-queue", args=[project.pk]))
    assert len(queue.context["rows"]) == 6
    facts = sd.facts_item(project, texts=("One.", "Two.", "Three."))  # three tasks on one item
    for task in facts:
        for user in raters:
            first = Judgment.objects.create(task=task, annotator=user, sentence_labels=["factual"])
            Judgment.objects.create(
                task=task, annotator=user, sentence_labels=["hallucinated"], supersedes=first
            )
        skip(task, UserFactory())
    with django_assert_max_num_queries(9):  # item, images, candidates, tasks, judgments, skips
        page = manager_client.get(reverse("item-detail", args=[project.pk, facts[0].item_id]))
    assert sum(len(t["judgments"]) for t in page.context["tasks"]) == 18


# --- the item page --------------------------------------------------------------------------------


def test_item_page_shows_every_judgment_and_marks_superseded_ones(manager_client, project, raters):
    ann, bob, _ = raters
    task = pair_task(project, prompt="Which is kinder?", texts=("Be kind.", "Be blunt."))
    Item.objects.filter(pk=task.item_id).update(split="test")
    first = vote(task, ann, "b", strength=1, rationale="first thought", time_spent_ms=4200)
    second = vote(task, ann, "a", strength=3, rationale="on reflection", supersedes=first)
    vote(task, bob, "tie")
    skip(task, UserFactory(username="dan"), reason="too long")
    response = manager_client.get(reverse("item-detail", args=[project.pk, task.item_id]))
    html = response.content.decode()
    assert response.status_code == 200
    for text in ("Which is kinder?", "Be kind.", "Be blunt.", "first thought", "on reflection", "4.2 s"):
        assert text in html
    assert "A is better (response 1)" in html and "B is better (response 2)" in html and "Tie" in html
    assert re.search(rf'id="judgment-{first.pk}" class="superseded[^"]*"', html)
    assert f'superseded by <a href="#judgment-{second.pk}">#{second.pk}</a>' in html
    assert re.search(rf'id="judgment-{second.pk}" class="current"', html)
    assert f"replaces #{first.pk}" in html
    assert 'id="item-split">Test<' in html and 'id="item-gold">no<' in html
    assert "annotators disagree" in html  # ann's current a against bob's tie
    assert "dan" in html and "too long" in html


def test_item_page_shows_rankings_by_response_and_images_as_local_thumbnails(manager_client, raters):
    ann, _, _ = raters
    manager = UserFactory(username="ranker-manager")
    project = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    MembershipFactory(project=project, user=manager, role="manager")
    task = sd.multi_image_task(project)
    Judgment.objects.create(
        task=task, annotator=ann, ranking=[[task.candidate_ids[1]], [task.candidate_ids[0]]]
    )
    manager_client.force_login(manager)
    html = manager_client.get(reverse("item-detail", args=[project.pk, task.item_id])).content.decode()
    assert "response 2 &gt; response 1" in html
    thumbs = re.findall(r'<img src="([^"]+)"[^>]*width="(\d+)"', html)
    assert len(thumbs) == 3
    assert all(src.startswith("/assets/") and int(width) <= 160 for src, width in thumbs)


def test_item_page_escapes_model_text_and_loads_nothing_remote(manager_client, project, raters):
    task = pair_task(project, prompt=XSS, texts=(XSS, "![p](https://tracker.example/q.png)"))
    vote(task, raters[0], "a", rationale=XSS)
    Judgment.objects.create(task=task, annotator=raters[1], choice="b", strength=1, corrected_step=XSS)
    for url in (
        reverse("item-detail", args=[project.pk, task.item_id]),
        reverse("item-list", args=[project.pk]),
        reverse("disagreement-queue", args=[project.pk]),
    ):
        html = manager_client.get(url).content.decode()
        assert "<script>alert" not in html and 'tracker.example/p.png">' not in html, url
        assert "&lt;script&gt;alert" in html, url
        assert not re.search(r"<img[^>]+src=\"https?:", html), url


def test_unknown_or_foreign_item_is_404(manager_client, project):
    other = pair_task(ProjectFactory())
    assert manager_client.get(reverse("item-detail", args=[project.pk, other.item_id])).status_code == 404
    assert manager_client.get(reverse("item-detail", args=[project.pk, 10**9])).status_code == 404


# --- the disagreement queue -----------------------------------------------------------------------


def test_queue_lists_disagreeing_tasks_with_each_vote_and_links_the_item(manager_client, project, curated):
    response = manager_client.get(reverse("disagreement-queue", args=[project.pk]))
    split = curated["split"]
    assert [row["task"].pk for row in response.context["rows"]] == [split.pk]
    votes = response.context["rows"][0]["votes"]
    assert votes == [
        {"who": "ann", "vote": "A is better (response 1)"},
        {"who": "bob", "vote": "B is better (response 2)"},
    ]
    html = response.content.decode()
    assert f'href="{reverse("item-detail", args=[project.pk, split.item_id])}#task-{split.pk}"' in html
    assert "1 task on 1 item" in html


def test_agreement_page_links_the_queue_with_the_number_of_items(manager_client, project, curated):
    html = manager_client.get(reverse("agreement", args=[project.pk])).content.decode()
    link = reverse("disagreement-queue", args=[project.pk])
    assert f'href="{link}">1 item where annotators disagree →' in html


def test_project_page_links_the_browser_for_managers_only(client, manager, annotator, project):
    MembershipFactory(project=project, user=annotator, role="annotator")
    url = reverse("project-detail", args=[project.pk])
    browser = f'href="{reverse("item-list", args=[project.pk])}"'
    client.force_login(manager)
    assert browser in client.get(url).content.decode()
    client.force_login(annotator)
    assert browser not in client.get(url).content.decode()


# --- who may see them -----------------------------------------------------------------------------


def test_curation_pages_are_for_managers_annotators_get_403_outsiders_404(client, project, curated):
    item_id = curated["split"].item_id
    urls = [
        reverse("item-list", args=[project.pk]),
        reverse("item-detail", args=[project.pk, item_id]),
        reverse("disagreement-queue", args=[project.pk]),
    ]
    annotator = UserFactory(username="just-annotates")
    MembershipFactory(project=project, user=annotator, role="annotator")
    client.force_login(annotator)
    assert [client.get(url).status_code for url in urls] == [403, 403, 403]
    client.force_login(UserFactory(username="outsider"))
    assert [client.get(url).status_code for url in urls] == [404, 404, 404]
    client.logout()
    assert all(client.get(url).status_code == 302 for url in urls)  # to the login page
