"""Typed judgment submits for the ranking, step-wise, factuality and image-pair screens."""

import pytest
from django.core.exceptions import ValidationError

from annotation.models import AssignmentState, Judgment, TaskType
from annotation.services.assignments import assignment_take_next
from annotation.services.judgments import (
    judgment_submit_image_pair,
    judgment_submit_ranking,
    judgment_submit_sentences,
    judgment_submit_steps,
)
from tests import screen_data as sd

pytestmark = pytest.mark.django_db


def held(project, annotator, task_type, build):
    project.task_type = task_type
    project.save()
    task = build(project)
    return task, assignment_take_next(project=project, annotator=annotator)


def field_errors(excinfo) -> dict[str, str]:
    return {field: " ".join(errors) for field, errors in excinfo.value.message_dict.items()}


# --- ranking ---------------------------------------------------------------------------------------


def test_ranking_stores_groups_ratings_and_marks_the_assignment_done(project, annotator):
    task, assignment = held(project, annotator, TaskType.RANKING, sd.ranking_task)
    a, b, c = task.candidate_ids
    judgment = judgment_submit_ranking(
        assignment=assignment,
        annotator=annotator,
        ranking=[[c], [a, b]],
        ratings={c: 5, a: 2},
        time_spent_ms=900,
    )
    assert judgment.ranking == [[c], [a, b]] and judgment.ratings == {str(c): 5, str(a): 2}
    assert judgment.shown_order == assignment.shown_order and judgment.choice == ""
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.DONE


@pytest.mark.parametrize(
    ("ranking", "message"),
    [
        (None, "Order the responses"),
        ([], "Order the responses"),
        ([["x"]], "groups of response ids"),
        ("dup", "appears twice"),
        ("missing", "exactly once"),
        ("stranger", "exactly once"),
        ("all_tied", "All responses are tied"),
    ],
)
def test_ranking_rejects_a_bad_order_with_a_ranking_message(project, annotator, ranking, message):
    task, assignment = held(project, annotator, TaskType.RANKING, sd.ranking_task)
    a, b, c = task.candidate_ids
    ranking = (
        {
            "dup": [[a], [a], [b, c]],
            "missing": [[a], [b]],
            "stranger": [[a], [b], [c, 99999]],
            "all_tied": [[a, b, c]],
        }.get(ranking, ranking)
        if isinstance(ranking, str)
        else ranking
    )
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_ranking(assignment=assignment, annotator=annotator, ranking=ranking)
    assert message in field_errors(excinfo)["ranking"]
    assert not Judgment.objects.exists()


@pytest.mark.parametrize(
    ("rating", "message"), [(0, "from 1 to 5"), (6, "from 1 to 5"), ("4", "from 1 to 5")]
)
def test_ranking_rejects_ratings_outside_one_to_five(project, annotator, rating, message):
    task, assignment = held(project, annotator, TaskType.RANKING, sd.ranking_task)
    a, b, c = task.candidate_ids
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_ranking(
            assignment=assignment, annotator=annotator, ranking=[[a], [b], [c]], ratings={a: rating}
        )
    assert message in field_errors(excinfo)["ratings"]


def test_ranking_rejects_a_rating_for_a_response_outside_the_task(project, annotator):
    task, assignment = held(project, annotator, TaskType.RANKING, sd.ranking_task)
    a, b, c = task.candidate_ids
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_ranking(
            assignment=assignment, annotator=annotator, ranking=[[a], [b], [c]], ratings={12345: 3}
        )
    assert "unknown response" in field_errors(excinfo)["ratings"]


def test_ranking_reports_a_long_rationale_beside_the_ranking_error(project, annotator):
    _task, assignment = held(project, annotator, TaskType.RANKING, sd.ranking_task)
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_ranking(assignment=assignment, annotator=annotator, ranking=[], rationale="x" * 5001)
    assert set(field_errors(excinfo)) == {"ranking", "rationale"}


# --- steps -----------------------------------------------------------------------------------------


def test_steps_store_labels_first_wrong_step_and_correction(project, annotator):
    _task, assignment = held(project, annotator, TaskType.STEPWISE, sd.steps_task)
    judgment = judgment_submit_steps(
        assignment=assignment,
        annotator=annotator,
        step_labels=["correct", "wrong"],
        corrected_step=" Then 2x = 4. ",
    )
    assert judgment.step_labels == ["correct", "wrong"]
    assert (judgment.first_wrong_step, judgment.corrected_step) == (1, "Then 2x = 4.")


def test_steps_all_labelled_without_a_wrong_one_have_no_first_wrong_step(project, annotator):
    _task, assignment = held(project, annotator, TaskType.STEPWISE, sd.steps_task)
    judgment = judgment_submit_steps(
        assignment=assignment, annotator=annotator, step_labels=["correct", "neutral", "correct"]
    )
    assert judgment.first_wrong_step is None and judgment.corrected_step == ""


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, "Label the steps"),
        (["correct", "maybe"], "not 'maybe'"),
        (["correct", "correct", "correct", "correct"], "3 steps but 4 labels"),
        (["wrong", "correct"], "stops at the first wrong step"),
        (["correct", "neutral"], "step 3 has no label"),
    ],
)
def test_steps_reject_bad_labels_with_a_step_labels_message(project, annotator, labels, message):
    _task, assignment = held(project, annotator, TaskType.STEPWISE, sd.steps_task)
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_steps(assignment=assignment, annotator=annotator, step_labels=labels)
    assert message in field_errors(excinfo)["step_labels"]


def test_steps_refuse_a_correction_without_a_wrong_step(project, annotator):
    _task, assignment = held(project, annotator, TaskType.STEPWISE, sd.steps_task)
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_steps(
            assignment=assignment,
            annotator=annotator,
            step_labels=["correct", "correct", "correct"],
            corrected_step="better",
        )
    assert "Only a wrong step" in field_errors(excinfo)["corrected_step"]


def test_steps_refuse_an_overlong_correction(project, annotator):
    _task, assignment = held(project, annotator, TaskType.STEPWISE, sd.steps_task)
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_steps(
            assignment=assignment, annotator=annotator, step_labels=["wrong"], corrected_step="y" * 5001
        )
    assert "at most 5000" in field_errors(excinfo)["corrected_step"]


# --- sentences -------------------------------------------------------------------------------------


def test_sentences_split_from_the_text_when_none_are_stored(project, annotator):
    _task, assignment = held(project, annotator, TaskType.FACTUALITY, sd.facts_task)
    labels = [{"label": "factual"}, {"label": "hallucinated", "correction": " About 2 million. "}]
    judgment = judgment_submit_sentences(assignment=assignment, annotator=annotator, sentence_labels=labels)
    assert judgment.sentence_labels == [
        {"label": "factual"},
        {"label": "hallucinated", "correction": "About 2 million."},
    ]


def test_sentences_use_the_stored_sentence_list(project, annotator):
    _task, assignment = held(
        project,
        annotator,
        TaskType.FACTUALITY,
        lambda p: sd.facts_task(p, text="One. Two. Three.", sentences=["One. Two. Three."]),
    )
    judgment = judgment_submit_sentences(
        assignment=assignment, annotator=annotator, sentence_labels=[{"label": "not_claim"}]
    )
    assert judgment.sentence_labels == [{"label": "not_claim"}]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, "Label all 2 sentences (0 labelled)"),
        ([{"label": "factual"}], "Label all 2 sentences (1 labelled)"),
        ([{"label": "factual"}, {"label": "true"}], "Sentence 2: mark it factual"),
        ([{"label": "factual"}, "factual"], "Sentence 2: mark it factual"),
        ([{"label": "factual", "correction": "no"}, {"label": "factual"}], "Sentence 1: only a hallucinated"),
        (
            [{"label": "factual"}, {"label": "hallucinated", "correction": 5}],
            "Sentence 2: the correction must be text",
        ),
        ([{"label": "factual"}, {"label": "hallucinated", "correction": "z" * 5001}], "at most 5000"),
    ],
)
def test_sentences_reject_bad_labels_naming_the_sentence(project, annotator, labels, message):
    _task, assignment = held(project, annotator, TaskType.FACTUALITY, sd.facts_task)
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_sentences(assignment=assignment, annotator=annotator, sentence_labels=labels)
    assert message in field_errors(excinfo)["sentence_labels"]


# --- image pairs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("choice", "label_0"), [("a", 1.0), ("b", 0.0), ("tie", 0.5)])
def test_image_pair_stores_the_pick_a_pic_label(project, annotator, choice, label_0):
    _task, assignment = held(project, annotator, TaskType.IMAGE_PAIR, sd.image_pair_task)
    judgment = judgment_submit_image_pair(assignment=assignment, annotator=annotator, choice=choice)
    assert (judgment.choice, judgment.label_score, judgment.strength) == (choice, label_0, None)


@pytest.mark.parametrize("choice", ["both_bad", "", "left"])
def test_image_pair_rejects_other_choices(project, annotator, choice):
    _task, assignment = held(project, annotator, TaskType.IMAGE_PAIR, sd.image_pair_task)
    with pytest.raises(ValidationError) as excinfo:
        judgment_submit_image_pair(assignment=assignment, annotator=annotator, choice=choice)
    assert "left image (1)" in field_errors(excinfo)["choice"]


# --- shared rules ----------------------------------------------------------------------------------


def test_a_typed_submit_twice_returns_the_first_judgment(project, annotator):
    task, assignment = held(project, annotator, TaskType.RANKING, sd.ranking_task)
    a, b, c = task.candidate_ids
    first = judgment_submit_ranking(assignment=assignment, annotator=annotator, ranking=[[a], [b], [c]])
    again = judgment_submit_ranking(assignment=assignment, annotator=annotator, ranking=[[c], [b], [a]])
    assert again.pk == first.pk and Judgment.objects.count() == 1


def test_a_typed_submit_refuses_someone_elses_assignment(project, annotator, manager):
    _task, assignment = held(project, annotator, TaskType.STEPWISE, sd.steps_task)
    with pytest.raises(ValidationError, match="assigned to someone else"):
        judgment_submit_steps(assignment=assignment, annotator=manager, step_labels=["wrong"])
