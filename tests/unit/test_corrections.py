"""Review and correction: recent judgments, corrections that supersede, skipped tasks taken back."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.models import Assignment, AssignmentState, Judgment, Project, TaskType
from annotation.selectors import annotation_progress
from annotation.selectors_review import judgments_recent_for_annotator, vote_words
from annotation.services.assignments import assignment_reopen, assignment_skip, assignment_take_next
from annotation.services.judgments import judgment_correct, judgment_submit
from tests.factories import MembershipFactory, UserFactory, pair_task

pytestmark = pytest.mark.django_db


def url(name, project, *args):
    return reverse(name, args=[project.pk, *args])


def judged(project, annotator, *, choice="a", strength=2, prompt=None):
    task = pair_task(project, **({"prompt": prompt} if prompt else {}))
    assignment = assignment_take_next(project=project, annotator=annotator)
    assert assignment.task_id == task.pk
    return judgment_submit(assignment=assignment, annotator=annotator, choice=choice, strength=strength)


def side_of(judgment, choice):
    """The side (left/right) on which ``choice`` (a/b) was shown for this judgment."""
    picked = judgment.task.candidate_ids[0 if choice == "a" else 1]
    return "left" if judgment.shown_order[0] == picked else "right"


# --- services ---------------------------------------------------------------------------------------


def test_correction_appends_a_judgment_that_supersedes_and_keeps_the_old_row(project, annotator):
    MembershipFactory(project=project, user=annotator)
    old = judged(project, annotator, choice="a", strength=3)
    new = judgment_correct(judgment=old, annotator=annotator, choice="b", strength=1)
    old.refresh_from_db()
    assert (old.choice, old.strength) == ("a", 3)  # never rewritten
    assert new.supersedes_id == old.pk and new.shown_order == old.shown_order
    rows = judgments_recent_for_annotator(project=project, annotator=annotator)
    assert [r["judgment"].pk for r in rows] == [new.pk]
    assert rows[0]["is_correction"]


def test_correcting_an_already_superseded_judgment_is_refused(project, annotator):
    MembershipFactory(project=project, user=annotator)
    old = judged(project, annotator)
    newer = judgment_correct(judgment=old, annotator=annotator, choice="tie", strength=None)
    with pytest.raises(ValidationError, match="already corrected"):
        judgment_correct(judgment=old, annotator=annotator, choice="b", strength=2)
    newest = judgment_correct(judgment=newer, annotator=annotator, choice="b", strength=2)
    assert newest.supersedes_id == newer.pk  # the chain: old ← newer ← newest
    assert Judgment.objects.filter(task=old.task, superseded_by__isnull=True).get() == newest


def test_only_the_author_can_correct(project, annotator):
    MembershipFactory(project=project, user=annotator)
    old = judged(project, annotator)
    with pytest.raises(ValidationError, match="Only the annotator"):
        judgment_correct(judgment=old, annotator=UserFactory(), choice="b", strength=2)


def test_vote_words_name_the_side_as_it_was_shown(project, annotator):
    MembershipFactory(project=project, user=annotator)
    j = judged(project, annotator, choice="a", strength=3)
    letter = "A (left)" if side_of(j, "a") == "left" else "B (right)"
    assert vote_words(j) == f"{letter} is better · much better"


def test_reopen_makes_a_skipped_task_active_again_and_fixes_counters(project, annotator):
    MembershipFactory(project=project, user=annotator)
    pair_task(project)
    assignment = assignment_take_next(project=project, annotator=annotator)
    assignment_skip(assignment=assignment, annotator=annotator, reason="unsure")
    assert annotation_progress(project=project, annotator=annotator)["remaining"] == 0
    reopened = assignment_reopen(assignment=assignment, annotator=annotator)
    assert reopened.pk == assignment.pk and reopened.state == AssignmentState.ACTIVE
    assert reopened.skip_reason == ""
    progress = annotation_progress(project=project, annotator=annotator)
    assert (progress["skipped"], progress["remaining"]) == (0, 1)
    assert assignment_take_next(project=project, annotator=annotator).pk == assignment.pk
    judgment_submit(assignment=reopened, annotator=annotator, choice="tie", strength=None)
    assert annotation_progress(project=project, annotator=annotator)["done"] == 1


def test_reopen_refused_when_others_filled_the_task(project, annotator):
    MembershipFactory(project=project, user=annotator)
    pair_task(project)
    mine = assignment_take_next(project=project, annotator=annotator)
    assignment_skip(assignment=mine, annotator=annotator, reason="unsure")
    other = UserFactory()
    theirs = assignment_take_next(project=project, annotator=other)
    judgment_submit(assignment=theirs, annotator=other, choice="a", strength=1)
    with pytest.raises(ValidationError, match="filled"):
        assignment_reopen(assignment=mine, annotator=annotator)
    mine.refresh_from_db()
    assert mine.state == AssignmentState.SKIPPED


def test_reopen_of_a_judged_task_is_refused(project, annotator):
    MembershipFactory(project=project, user=annotator)
    j = judged(project, annotator)
    assignment = Assignment.objects.get(task=j.task, annotator=annotator)
    with pytest.raises(ValidationError, match="already judged"):
        assignment_reopen(assignment=assignment, annotator=annotator)


# --- views and permissions ------------------------------------------------------------------------


def test_recent_page_lists_own_current_judgments_newest_first_escaped(annotator_client, project, annotator):
    first = judged(project, annotator, prompt="<script>alert(1)</script> first prompt")
    second = judged(project, annotator, prompt="second prompt")
    judged(project, UserFactory(), prompt="someone else's prompt")
    html = annotator_client.get(url("my-judgments", project)).content.decode()
    assert html.index("second prompt") < html.index("first prompt")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "someone else" not in html
    assert url("my-judgment-correct", project, first.pk) in html
    assert url("my-judgment-correct", project, second.pk) in html
    assert "frozen" in html  # versions keep their rows: the page says so


def test_correct_page_prefills_the_current_vote_and_posts_a_new_judgment(
    annotator_client, project, annotator
):
    old = judged(project, annotator, choice="a", strength=3)
    page = annotator_client.get(url("my-judgment-correct", project, old.pk)).content.decode()
    assert f'value="{side_of(old, "a")}" checked' in page and 'value="3" checked' in page
    assert "hx-post" not in page and 'id="skip-form"' not in page
    response = annotator_client.post(
        url("my-judgment-correct", project, old.pk), {"choice": side_of(old, "b"), "strength": "1"}
    )
    assert response.status_code == 302 and response["Location"] == url("my-judgments", project)
    new = Judgment.objects.get(supersedes=old)
    assert (new.choice, new.strength) == ("b", 1)
    listing = annotator_client.get(url("my-judgments", project)).content.decode()
    assert "Correction saved" in listing and vote_words(new) in listing


def test_correct_view_refuses_a_superseded_judgment_with_409(annotator_client, project, annotator):
    old = judged(project, annotator)
    new = judgment_correct(judgment=old, annotator=annotator, choice="tie", strength=None)
    for method in ("get", "post"):
        response = getattr(annotator_client, method)(
            url("my-judgment-correct", project, old.pk), {"choice": "tie"}
        )
        assert response.status_code == 409
        assert "already corrected" in response.content.decode()
        assert url("my-judgment-correct", project, new.pk) in response.content.decode()
    assert Judgment.objects.filter(task=old.task).count() == 2


def test_correct_view_field_error_is_400_and_keeps_the_old_vote(annotator_client, project, annotator):
    old = judged(project, annotator)
    response = annotator_client.post(url("my-judgment-correct", project, old.pk), {"choice": "sideways"})
    assert response.status_code == 400 and "Choose A" in response.content.decode()
    assert not Judgment.objects.filter(supersedes=old).exists()


def test_others_judgments_are_404_for_annotators_and_managers(
    client, annotator_client, project, annotator, manager
):
    other = UserFactory()
    MembershipFactory(project=project, user=other)
    theirs = judged(project, other)
    assert annotator_client.get(url("my-judgment-correct", project, theirs.pk)).status_code == 404
    client.force_login(manager)
    assert client.get(url("my-judgment-correct", project, theirs.pk)).status_code == 404
    assert "Correct</a>" not in client.get(url("my-judgments", project)).content.decode()
    outsider_project = Project.objects.create(name="elsewhere", task_type=TaskType.PAIRWISE)
    assert client.get(url("my-judgments", outsider_project)).status_code == 404


def test_skipped_page_shows_reason_and_take_back_opens_the_task(annotator_client, project, annotator):
    pair_task(project, prompt="Hard maths question")
    assignment = assignment_take_next(project=project, annotator=annotator)
    assignment_skip(assignment=assignment, annotator=annotator, reason="needs <b>calculus</b>")
    html = annotator_client.get(url("my-skipped", project)).content.decode()
    assert "Hard maths question" in html and "needs &lt;b&gt;calculus&lt;/b&gt;" in html
    annotate_html = annotator_client.get(url("annotate", project)).content.decode()
    assert url("my-skipped", project) in annotate_html and "Skipped (1)" in annotate_html
    response = annotator_client.post(url("my-skipped-take-back", project, assignment.pk))
    assert response.status_code == 302
    assert response["Location"] == url("annotate-assignment", project, assignment.pk)
    page = annotator_client.get(response["Location"]).content.decode()
    assert "Hard maths question" in page and f'data-assignment-id="{assignment.pk}"' in page
    response = annotator_client.post(url("annotate-submit", project, assignment.pk), {"choice": "tie"})
    assert response.status_code == 302
    assert Judgment.objects.filter(task=assignment.task, annotator=annotator).count() == 1


def test_take_back_refusals_are_4xx(annotator_client, project, annotator):
    pair_task(project)
    mine = assignment_take_next(project=project, annotator=annotator)
    assignment_skip(assignment=mine, annotator=annotator, reason="unsure")
    other = UserFactory()
    judgment_submit(
        assignment=assignment_take_next(project=project, annotator=other),
        annotator=other,
        choice="a",
        strength=1,
    )
    response = annotator_client.post(url("my-skipped-take-back", project, mine.pk))
    assert response.status_code == 409 and "filled" in response.content.decode()
    theirs = Assignment.objects.get(annotator=other)
    assert annotator_client.post(url("my-skipped-take-back", project, theirs.pk)).status_code == 404
    assert annotator_client.get(url("my-skipped-take-back", project, mine.pk)).status_code == 405
