"""The annotate page, its htmx task panel, submit and skip."""

import pytest
from django.urls import reverse

from annotation.models import Assignment, AssignmentState, Judgment
from tests.factories import ItemFactory, MembershipFactory, UserFactory, pair_task

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def url(name, project, *args):
    return reverse(name, args=[project.pk, *args])


def current(annotator):
    return Assignment.objects.get(annotator=annotator, state=AssignmentState.ACTIVE)


def left_right(assignment):
    """The candidate ids shown left and right."""
    return assignment.shown_order[0], assignment.shown_order[1]


def test_page_shows_prompt_both_candidates_guidelines_and_progress(annotator_client, project, annotator):
    pair_task(project, prompt="Explain recursion", texts=("First answer", "Second answer"))
    response = annotator_client.get(url("annotate", project))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Explain recursion" in html and "First answer" in html and "Second answer" in html
    assert "<strong>helpful</strong>" in html  # guidelines markdown, rendered
    assert 'id="progress-mine"' in html and "<b>0</b> done" in html
    assert 'data-state="task"' in html


def test_page_hides_model_identity(annotator_client, project):
    task = pair_task(project)
    from annotation.models import Candidate

    Candidate.objects.filter(pk__in=task.candidate_ids).update(
        provenance={"kind": "model", "model": "gpt-secret-9"}
    )
    html = annotator_client.get(url("annotate", project)).content.decode()
    assert "gpt-secret-9" not in html


def test_candidates_appear_left_to_right_in_shown_order(annotator_client, project, annotator):
    pair_task(project, texts=("alpha-text", "omega-text"))
    html = annotator_client.get(url("annotate", project)).content.decode()
    assignment = current(annotator)
    texts = {c: t for c, t in zip(assignment.task.candidate_ids, ("alpha-text", "omega-text"), strict=True)}
    left, right = left_right(assignment)
    assert html.index(texts[left]) < html.index(texts[right])


def test_conversation_prompt_renders_as_role_labelled_turns(annotator_client, project):
    from annotation.models import Candidate, Task

    item = ItemFactory(
        project=project,
        messages=[{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi **there**"}],
    )
    cands = [Candidate.objects.create(item=item, position=i, text=f"reply {i}") for i in range(2)]
    Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in cands])
    html = annotator_client.get(url("annotate", project)).content.decode()
    assert 'class="turn role-system"' in html and 'class="turn role-user"' in html
    assert "Hi <strong>there</strong>" in html


def test_model_html_is_escaped_and_code_blocks_render(annotator_client, project):
    pair_task(
        project, texts=("<script>alert(1)</script> <img src=x onerror=alert(2)>", "```python\nprint(1)\n```")
    )
    html = annotator_client.get(url("annotate", project)).content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html and '<img src="x"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<pre><code" in html and "print(1)" in html


@pytest.mark.parametrize(("side", "position"), [("left", 0), ("right", 1)])
def test_submit_maps_the_chosen_side_back_to_a_or_b(annotator_client, project, annotator, side, position):
    pair_task(project)
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {"choice": side, "strength": "3", "rationale": "why", "time_spent_ms": "1500"},
        **HTMX,
    )
    assert response.status_code == 200
    judgment = Judgment.objects.get()
    chosen_id = assignment.shown_order[position]
    assert judgment.choice == ("a" if chosen_id == assignment.task.candidate_ids[0] else "b")
    assert judgment.shown_order == assignment.shown_order and judgment.strength == 3
    assert 0 <= judgment.time_spent_ms <= 1500


def test_submit_returns_the_next_task_as_a_fragment(annotator_client, project, annotator):
    pair_task(project, prompt="first prompt"), pair_task(project, prompt="second prompt")
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk), {"choice": "tie", "strength": "2"}, **HTMX
    )
    html = response.content.decode()
    assert "second prompt" in html and "<html" not in html and 'id="task-panel"' in html
    assert Judgment.objects.get().strength is None  # strength is for A/B only
    assert "<b>1</b> done" in html


def test_submit_without_a_choice_rerenders_the_same_task_with_the_error(annotator_client, project, annotator):
    pair_task(project, prompt="only prompt")
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk), {"strength": "2", "rationale": "kept text"}, **HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "only prompt" in html and "Choose A" in html and "kept text" in html
    assert f'data-assignment-id="{assignment.pk}"' in html
    assert not Judgment.objects.exists()


def test_double_post_creates_one_judgment(annotator_client, project, annotator):
    pair_task(project), pair_task(project)
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    for _ in range(2):
        response = annotator_client.post(
            url("annotate-submit", project, assignment.pk), {"choice": "left", "strength": "2"}, **HTMX
        )
        assert response.status_code == 200
    assert Judgment.objects.count() == 1


def test_submit_without_js_redirects_to_the_page_and_uses_server_time(annotator_client, project, annotator):
    pair_task(project)
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {"choice": "right", "strength": "1", "shown_at": assignment.created_at.isoformat()},
    )
    assert response.status_code == 302 and response["Location"] == url("annotate", project)
    assert Judgment.objects.get().time_spent_ms is not None


def test_skip_needs_a_reason_and_then_moves_on(annotator_client, project, annotator):
    pair_task(project, prompt="skip me"), pair_task(project, prompt="take me")
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    skip = url("annotate-skip", project, assignment.pk)
    error = annotator_client.post(skip, {"reason": ""}, **HTMX).content.decode()
    assert "skip me" in error and "Say why" in error
    moved = annotator_client.post(skip, {"reason": "needs medical knowledge"}, **HTMX).content.decode()
    assert "take me" in moved
    assignment.refresh_from_db()
    assert (assignment.state, assignment.skip_reason) == (AssignmentState.SKIPPED, "needs medical knowledge")


def test_next_returns_all_done_when_nothing_is_left(annotator_client, project):
    html = annotator_client.get(url("annotate-next", project), **HTMX).content.decode()
    assert 'id="all-done"' in html and 'data-state="idle"' in html


def test_outsider_gets_404_everywhere(client, project):
    pair_task(project)
    client.force_login(UserFactory(username="outsider"))
    assert client.get(url("annotate", project)).status_code == 404
    assert client.get(url("annotate-next", project)).status_code == 404
    assert client.post(url("annotate-submit", project, 1), {"choice": "left"}).status_code == 404


def test_annotator_cannot_submit_someone_elses_assignment(annotator_client, project):
    pair_task(project)
    other = UserFactory(username="other")
    MembershipFactory(project=project, user=other)
    from annotation.services.assignments import assignment_take_next

    theirs = assignment_take_next(project=project, annotator=other)
    response = annotator_client.post(
        url("annotate-submit", project, theirs.pk), {"choice": "left", "strength": "2"}
    )
    assert response.status_code == 404 and not Judgment.objects.exists()


def test_manager_member_can_annotate(manager_client, project):
    pair_task(project, prompt="for the manager")
    assert "for the manager" in manager_client.get(url("annotate", project)).content.decode()


def test_login_is_required(client, project):
    response = client.get(url("annotate", project))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_submit_rejects_get(annotator_client, project):
    assert annotator_client.get(url("annotate-submit", project, 1)).status_code == 405


def test_guidelines_are_rendered_sanitised(annotator_client, project):
    project.guidelines = 'Be **kind**.\n\n<script>alert(1)</script><a href="javascript:alert(2)">x</a>'
    project.save()
    pair_task(project)
    html = annotator_client.get(url("annotate", project)).content.decode()
    assert "Be <strong>kind</strong>." in html
    assert "<script>alert(1)" not in html and "javascript:alert" not in html


def test_error_rerender_keeps_a_default_strength_selected(annotator_client, project, annotator):
    pair_task(project)
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    html = annotator_client.post(url("annotate-submit", project, assignment.pk), {}, **HTMX).content.decode()
    assert 'name="strength" value="2" checked' in html


@pytest.mark.parametrize(
    ("side", "shown", "expected"),
    [
        ("left", [7, 8], "a"),
        ("left", [8, 7], "b"),
        ("right", [7, 8], "b"),
        ("right", [8, 7], "a"),
        ("tie", [8, 7], "tie"),
    ],
)
def test_side_to_choice_maps_through_shown_order(side, shown, expected):
    from annotation.views.annotate import side_to_choice

    assert side_to_choice(side, shown_order=shown, candidate_ids=[7, 8]) == expected


@pytest.mark.parametrize("raw", ["inf", "nan", "abc", "1e400"])
def test_bad_time_spent_values_never_fail_the_submit(annotator_client, project, annotator, raw):
    pair_task(project)
    annotator_client.get(url("annotate", project))
    assignment = current(annotator)
    response = annotator_client.post(
        url("annotate-submit", project, assignment.pk),
        {"choice": "left", "strength": "2", "time_spent_ms": raw},
        **HTMX,
    )
    assert response.status_code == 200 and Judgment.objects.count() == 1
