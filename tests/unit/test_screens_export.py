"""Judgments made on the ranking, step-wise, factuality and image-pair screens freeze into export rows."""

import pytest

from annotation.models import Item, TaskType
from annotation.services.assignments import assignment_take_next
from annotation.services.judgments import (
    judgment_submit_image_pair,
    judgment_submit_ranking,
    judgment_submit_sentences,
    judgment_submit_steps,
)
from annotation.services.versions import FreezeError, FreezeRule, dataset_version_freeze
from tests import screen_data as sd

pytestmark = pytest.mark.django_db


def typed(project, task_type):
    project.task_type = task_type
    project.save()
    return project


def take(project, annotator):
    return assignment_take_next(project=project, annotator=annotator)


def rows_of(version):
    return [e.row for e in version.examples.order_by("index")]


def test_a_ranking_freezes_into_better_worse_pairs_with_rank_and_rating_gaps(project, annotator):
    task = sd.ranking_task(typed(project, TaskType.RANKING), prompt="rank", texts=("r0", "r1", "r2"))
    a, b, c = task.candidate_ids
    judgment_submit_ranking(
        assignment=take(project, annotator),
        annotator=annotator,
        ranking=[[c], [a], [b]],
        ratings={c: 5, b: 2},
    )
    rows = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert sorted((r["chosen"], r["rejected"], r["rank_gap"], r["rating_gap"]) for r in rows) == [
        ("r0", "r1", 1, None),
        ("r2", "r0", 1, None),
        ("r2", "r1", 2, 3),
    ]


def test_tied_candidates_give_no_pair(project, annotator):
    task = sd.ranking_task(typed(project, TaskType.RANKING), texts=("r0", "r1", "r2"))
    a, b, c = task.candidate_ids
    judgment_submit_ranking(assignment=take(project, annotator), annotator=annotator, ranking=[[c], [a, b]])
    rows = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert sorted((r["chosen"], r["rejected"]) for r in rows) == [("r2", "r0"), ("r2", "r1")]


def test_a_wrong_step_with_a_correction_freezes_into_a_step_dpo_row(project, annotator):
    task = sd.steps_task(
        typed(project, TaskType.STEPWISE), prompt="Twice x is 6.", steps=("2x = 6.", "x = 4.", "Done.")
    )
    Item.objects.filter(pk=task.item_id).update(metadata={"answer": "3"})
    judgment_submit_steps(
        assignment=take(project, annotator),
        annotator=annotator,
        step_labels=["correct", "wrong"],
        corrected_step="x = 3.",
    )
    rows = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert rows == [
        {
            "prompt": "Twice x is 6.",
            "initial_reason_steps": "2x = 6.\n",
            "chosen": "x = 3.",
            "rejected": "x = 4.",
            "answer": "3",
        }
    ]
    # what Step-DPO trains on, prompt + steps so far + the step, keeps each step on its own line
    row = rows[0]
    assert (row["initial_reason_steps"] + row["chosen"]).splitlines() == ["2x = 6.", "x = 3."]


def test_a_wrong_first_step_freezes_with_no_steps_before_it(project, annotator):
    sd.steps_task(typed(project, TaskType.STEPWISE), prompt="Twice x is 6.", steps=("x = 4.", "Done."))
    judgment_submit_steps(
        assignment=take(project, annotator),
        annotator=annotator,
        step_labels=["wrong"],
        corrected_step="x = 3.",
    )
    (row,) = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert (row["initial_reason_steps"], row["chosen"], row["rejected"]) == ("", "x = 3.", "x = 4.")


def test_a_solution_without_a_wrong_step_gives_no_row(project, annotator):
    sd.steps_task(typed(project, TaskType.STEPWISE))
    judgment_submit_steps(
        assignment=take(project, annotator),
        annotator=annotator,
        step_labels=["correct", "correct", "neutral"],
    )
    with pytest.raises(FreezeError):
        dataset_version_freeze(project=project, rule=FreezeRule())


def test_sentence_labels_split_from_text_freeze_with_spans(project, annotator):
    sd.facts_item(
        typed(project, TaskType.FACTUALITY),
        prompt="Paris?",
        texts=("Paris is in France. I hope this helps!", "Paris is in Spain. It is big."),
    )
    for labels in (
        [{"label": "factual"}, {"label": "not_claim"}],
        [{"label": "hallucinated", "correction": "Paris is in France."}, {"label": "not_claim"}],
    ):
        judgment_submit_sentences(
            assignment=take(project, annotator), annotator=annotator, sentence_labels=labels
        )
    (row,) = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert (row["chosen"], row["rejected"]) == (
        "Paris is in France. I hope this helps!",
        "Paris is in Spain. It is big.",
    )
    assert [s["text"] for s in row["chosen_sentences"]] == ["Paris is in France.", "I hope this helps!"]
    assert [s["label"] for s in row["rejected_sentences"]] == ["hallucinated", "no_claim"]
    assert row["rejected_sentences"][1]["start"] == len("Paris is in Spain. ")


def test_image_pair_ties_are_dropped_by_default_and_kept_as_half_when_asked(project, annotator):
    typed(project, TaskType.IMAGE_PAIR)
    sd.image_pair_task(project, caption="first")
    sd.image_pair_task(project, caption="second", colors=("green", "gray"))
    judgment_submit_image_pair(assignment=take(project, annotator), annotator=annotator, choice="tie")
    judgment_submit_image_pair(assignment=take(project, annotator), annotator=annotator, choice="b")
    strict = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert [(r["caption"], r["label_0"]) for r in strict] == [("second", 0.0)]
    loose = rows_of(dataset_version_freeze(project=project, rule=FreezeRule(drop_ties=False)))
    assert sorted((r["caption"], r["label_0"]) for r in loose) == [("first", 0.5), ("second", 0.0)]
