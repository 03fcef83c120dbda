"""The annotate page dispatches ranking, step-wise, factuality, multi-image and image-pair screens."""

import json

import pytest
from django.urls import reverse

from annotation.models import Assignment, AssignmentState, Candidate, Item, Judgment, TaskType
from tests import screen_data as sd
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
XSS = "<script>alert(1)</script> <img src=x onerror=alert(2)>"


def url(name, project, *args):
    return reverse(name, args=[project.pk, *args])


def open_page(client, project, task_type, build):
    project.task_type = task_type
    project.save()
    build(project)
    response = client.get(url("annotate", project))
    assert response.status_code == 200
    return response.content.decode()


def current(annotator):
    return Assignment.objects.get(annotator=annotator, state=AssignmentState.ACTIVE)


def assert_escaped(html):
    assert "<script>alert(1)" not in html and "<img src=x" not in html and '<img src="x"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("task_type", "build", "screen", "marker", "script"),
    [
        (TaskType.RANKING, sd.ranking_task, "rank", 'id="rank-list"', "js/annotate_rank.js"),
        (TaskType.STEPWISE, sd.steps_task, "steps", 'id="step-list"', "js/annotate_labels.js"),
        (TaskType.STEPWISE, sd.step_pair_task, "steps_pair", "Reasoning so far", "js/annotate_labels.js"),
        (TaskType.FACTUALITY, sd.facts_task, "facts", 'id="sentence-list"', "js/annotate_labels.js"),
        (TaskType.MULTI_IMAGE, sd.multi_image_task, "images", 'class="gallery"', "js/annotate_images.js"),
        (
            TaskType.IMAGE_PAIR,
            sd.image_pair_task,
            "imgpair",
            "Which image fits the caption",
            "js/annotate_images.js",
        ),
    ],
)
def test_page_dispatches_to_the_screen_of_the_project_type(
    annotator_client, project, task_type, build, screen, marker, script
):
    html = open_page(annotator_client, project, task_type, build)
    assert f'data-screen="{screen}"' in html and marker in html and script in html
    assert 'id="judgment-form"' in html and 'name="time_spent_ms"' in html and 'id="skip-form"' in html


def test_pairwise_page_keeps_the_pair_screen(annotator_client, project):
    from tests.factories import pair_task

    pair_task(project)
    html = annotator_client.get(url("annotate", project)).content.decode()
    assert 'data-screen="pair"' in html and "annotate_rank.js" not in html


def test_ranking_shows_every_candidate_by_letter_in_shown_order_and_hides_provenance(
    annotator_client, project, annotator
):
    html = open_page(
        annotator_client,
        project,
        TaskType.RANKING,
        lambda p: sd.ranking_task(p, texts=("t-one", "t-two", "t-three")),
    )
    Candidate.objects.update(provenance={"kind": "model", "model": "gpt-secret-9"})
    html = annotator_client.get(url("annotate", project)).content.decode()
    assert "gpt-secret-9" not in html
    texts = {c.pk: c.text for c in Candidate.objects.all()}
    shown = [texts[cid] for cid in current(annotator).shown_order]
    assert [html.index(t) for t in shown] == sorted(html.index(t) for t in shown)
    assert [html.index(f'data-letter="{letter}"') for letter in "ABC"] == sorted(
        html.index(f'data-letter="{letter}"') for letter in "ABC"
    )


@pytest.mark.parametrize(
    ("task_type", "build"),
    [
        (TaskType.RANKING, lambda p: sd.ranking_task(p, texts=(XSS, "fine", "also fine"))),
        (TaskType.STEPWISE, lambda p: sd.steps_task(p, steps=("ok", XSS))),
        (TaskType.STEPWISE, lambda p: sd.step_pair_task(p, prefix=XSS, steps=(XSS, "b"))),
        (TaskType.FACTUALITY, lambda p: sd.facts_task(p, text=f"Fine sentence. {XSS}")),
        (TaskType.MULTI_IMAGE, lambda p: sd.multi_image_task(p, texts=(XSS, "b"), colors=("red", "blue"))),
        (TaskType.IMAGE_PAIR, lambda p: sd.image_pair_task(p, caption=XSS)),
    ],
)
def test_model_text_is_escaped_on_every_screen(annotator_client, project, task_type, build):
    assert_escaped(open_page(annotator_client, project, task_type, build))


def test_ranking_submit_stores_order_ratings_and_time_then_moves_on(annotator_client, project, annotator):
    open_page(annotator_client, project, TaskType.RANKING, sd.ranking_task)
    sd.ranking_task(project, prompt="the next ranking")
    assignment = current(annotator)
    a, b, c = assignment.shown_order
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {
            "ranking": json.dumps([[b], [a, c]]),
            f"rating_{b}": "5",
            f"rating_{a}": "",
            "time_spent_ms": "1500",
        },
        **HTMX,
    )
    html = response.content.decode()
    judgment = Judgment.objects.get()
    assert judgment.ranking == [[b], [a, c]] and judgment.ratings == {str(b): 5}
    assert 0 <= judgment.time_spent_ms <= 1500
    assert "the next ranking" in html and "<html" not in html


def test_ranking_error_rerenders_the_same_task_in_the_order_sent(annotator_client, project, annotator):
    open_page(
        annotator_client, project, TaskType.RANKING, lambda p: sd.ranking_task(p, texts=("x-1", "x-2", "x-3"))
    )
    assignment = current(annotator)
    a, b, c = assignment.shown_order
    html = annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {"ranking": json.dumps([[c, b, a]]), f"rating_{a}": "9", "rationale": "kept"},
        **HTMX,
    ).content.decode()
    assert "All responses are tied" in html and "from 1 to 5" in html and "kept" in html
    assert f'data-assignment-id="{assignment.pk}"' in html
    positions = [html.index(f'data-id="{cid}"') for cid in (c, b, a)]
    assert positions == sorted(positions) and html.count('data-tied="1"') == 2
    assert not Judgment.objects.exists()


def test_unreadable_ranking_json_gets_a_message_not_a_500(annotator_client, project, annotator):
    open_page(annotator_client, project, TaskType.RANKING, sd.ranking_task)
    assignment = current(annotator)
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk), {"ranking": "{nope"}, **HTMX
    )
    assert response.status_code == 200 and "could not be read" in response.content.decode()


def test_steps_submit_through_the_view(annotator_client, project, annotator):
    open_page(annotator_client, project, TaskType.STEPWISE, sd.steps_task)
    assignment = current(annotator)
    annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {
            "step_labels": json.dumps(["correct", "wrong"]),
            "corrected_step": "Then 2x = 4.",
            "time_spent_ms": "700",
        },
        **HTMX,
    )
    judgment = Judgment.objects.get()
    assert (judgment.step_labels, judgment.first_wrong_step, judgment.corrected_step) == (
        ["correct", "wrong"],
        1,
        "Then 2x = 4.",
    )
    assert judgment.time_spent_ms is not None


def test_steps_error_keeps_the_labels_and_the_correction(annotator_client, project, annotator):
    open_page(annotator_client, project, TaskType.STEPWISE, sd.steps_task)
    assignment = current(annotator)
    html = annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {"step_labels": json.dumps(["correct", "neutral"]), "corrected_step": "draft fix"},
        **HTMX,
    ).content.decode()
    assert "step 3 has no label yet" in html and "draft fix" in html
    assert 'data-index="0" data-label="correct"' in html and 'data-index="1" data-label="neutral"' in html


def test_step_pair_posts_the_pair_form(annotator_client, project, annotator):
    html = open_page(annotator_client, project, TaskType.STEPWISE, sd.step_pair_task)
    assert "Step 1: 3 apples." in html
    assignment = current(annotator)
    annotator_client.post(
        url("annotate-submit", project, assignment.pk), {"choice": "left", "strength": "2"}, **HTMX
    )
    judgment = Judgment.objects.get()
    assert judgment.choice == ("a" if assignment.shown_order[0] == assignment.task.candidate_ids[0] else "b")


def test_facts_submit_and_error_through_the_view(annotator_client, project, annotator):
    html = open_page(annotator_client, project, TaskType.FACTUALITY, sd.facts_task)
    assert "Paris is in France." in html and "It has 90 million people." in html
    assignment = current(annotator)
    submit = url("annotate-submit", project, assignment.pk)
    error = annotator_client.post(
        submit, {"sentence_labels": json.dumps([{"label": "factual"}])}, **HTMX
    ).content.decode()
    assert "Label all 2 sentences (1 labelled)" in error
    labels = [{"label": "factual"}, {"label": "hallucinated", "correction": "About 68 million."}]
    annotator_client.post(submit, {"sentence_labels": json.dumps(labels)}, **HTMX)
    assert Judgment.objects.get().sentence_labels == labels


def test_image_pair_submit_maps_sides_and_refuses_both_bad(annotator_client, project, annotator):
    open_page(annotator_client, project, TaskType.IMAGE_PAIR, sd.image_pair_task)
    assignment = current(annotator)
    submit = url("annotate-submit", project, assignment.pk)
    refused = annotator_client.post(submit, {"choice": "both_bad"}, **HTMX).content.decode()
    assert "left image (1)" in refused and not Judgment.objects.exists()
    annotator_client.post(submit, {"choice": "right"}, **HTMX)
    judgment = Judgment.objects.get()
    right_is_a = assignment.shown_order[1] == assignment.task.candidate_ids[0]
    assert (judgment.choice, judgment.label_score) == (("a", 1.0) if right_is_a else ("b", 0.0))


def test_multi_image_shows_images_in_order_through_the_asset_view_in_the_metadata_layout(
    annotator_client, project
):
    def build(p):
        task = sd.multi_image_task(p, colors=("red", "green", "blue"))
        Item.objects.filter(pk=task.item_id).update(metadata={"layout": "pip"})

    html = open_page(annotator_client, project, TaskType.MULTI_IMAGE, build)
    assert 'data-layout="pip"' in html and "/media/" not in html
    shas = [img.asset.sha256 for img in Item.objects.get().images.all()]
    positions = [html.index(reverse("asset-file", args=[sha])) for sha in shas]
    assert positions == sorted(positions)


# --- the asset view --------------------------------------------------------------------------------


def asset_url(task):
    candidate = Candidate.objects.get(pk=task.candidate_ids[0])
    return reverse("asset-file", args=[candidate.asset.sha256]), candidate.asset


def test_members_get_the_image_bytes(annotator_client, project):
    task = sd.image_pair_task(project)
    address, asset = asset_url(task)
    response = annotator_client.get(address)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == asset.file.open("rb").read()
    assert response["X-Content-Type-Options"] == "nosniff"


def test_item_images_are_served_to_members(annotator_client, project):
    task = sd.multi_image_task(project)
    sha = task.item.images.first().asset.sha256
    assert annotator_client.get(reverse("asset-file", args=[sha])).status_code == 200


def test_outsiders_get_404_for_images_and_every_screen(client, project):
    task = sd.image_pair_task(project)
    address, _asset = asset_url(task)
    other = ProjectFactory(name="elsewhere")
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=other, user=outsider)
    client.force_login(outsider)
    assert client.get(address).status_code == 404
    for task_type in (TaskType.RANKING, TaskType.FACTUALITY, TaskType.IMAGE_PAIR):
        project.task_type = task_type
        project.save()
        assert client.get(url("annotate", project)).status_code == 404


def test_asset_view_needs_login_and_never_reads_a_path(client, project, annotator):
    MembershipFactory(project=project, user=annotator)
    task = sd.image_pair_task(project)
    address, _asset = asset_url(task)
    anonymous = client.get(address)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    client.force_login(annotator)
    assert client.get(address).status_code == 200
    for bad in ("..%2F..%2Fsettings.py", "A" * 64, "0" * 64, "assets"):
        assert client.get(f"/assets/{bad}/").status_code == 404


@pytest.mark.parametrize(
    ("metadata", "layout"),
    [
        ({}, "grid"),
        ({"layout": "sequence"}, "sequence"),
        ({"mia_dpo": {"kind": "pip"}}, "pip"),
        ({"layout": "<b>bad</b>"}, "grid"),
        ({"mia_dpo": "not a dict"}, "grid"),
    ],
)
def test_multi_image_layout_comes_from_item_metadata(metadata, layout):
    from annotation.views.screens.images import layout_of

    assert layout_of(metadata) == layout


def test_ranking_names_more_than_nine_candidates_without_failing(annotator_client, project):
    texts = tuple(f"answer-{i}" for i in range(11))
    html = open_page(annotator_client, project, TaskType.RANKING, lambda p: sd.ranking_task(p, texts=texts))
    assert html.count('class="rank-card"') == 11 and 'data-letter="K"' in html and 'data-key=""' in html
