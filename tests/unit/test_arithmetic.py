import pytest

from annotation.builders.arithmetic import (
    final_answer,
    problem_generate,
    solution_check,
    solution_text,
    split_steps,
    step_holds,
)


def test_same_seed_gives_the_same_problem_and_different_seeds_differ():
    assert problem_generate(7) == problem_generate(7)
    assert len({problem_generate(seed).question for seed in range(20)}) == 20


@pytest.mark.parametrize("seed", range(50))
def test_reference_solution_of_every_generated_problem_checks_correct(seed):
    problem = problem_generate(seed)
    assert 2 <= len(problem.steps) <= 4
    check = solution_check(
        question=problem.question, steps=split_steps(solution_text(problem)), answer=problem.answer
    )
    assert check.correct and check.first_wrong is None and check.answer == problem.answer


def test_checker_finds_the_first_step_with_false_arithmetic():
    question = "Ann has 5 coins. She buys 3 boxes with 4 coins in each box. How many coins does Ann have now?"
    steps = ["3 * 4 = 12", "5 + 12 = 18", "18 - 1 = 17", "The answer is 17."]
    check = solution_check(question=question, steps=steps, answer=17)
    assert check.first_wrong == 1 and not check.correct


def test_checker_rejects_a_step_using_a_number_from_nowhere():
    question = "Ann has 5 coins. She buys 3 boxes with 4 coins in each box. How many coins does Ann have now?"
    steps = ["3 * 4 = 12", "7 + 12 = 19", "The answer is 19."]
    assert solution_check(question=question, steps=steps, answer=17).first_wrong == 1


def test_valid_steps_with_a_wrong_final_answer_fail_at_the_last_step():
    question = "Ann has 5 coins. She buys 3 boxes with 4 coins in each box. How many coins does Ann have now?"
    steps = ["3 * 4 = 12", "The answer is 12."]
    check = solution_check(question=question, steps=steps, answer=17)
    assert check.first_wrong == 1 and check.answer == 12 and not check.correct


def test_prose_steps_are_neither_right_nor_wrong():
    assert step_holds("First we add the boxes.", {1.0}) is None
    assert step_holds("We get 3 × 4 = 12 coins.", {3.0, 4.0}) is True
    assert step_holds("So 10 / 4 = 2.5, and 2.5 + 1 = 3.5.", {10.0, 4.0, 1.0}) is True
    assert step_holds("So 10 / 4 = 2.5, and 2.5 + 9 = 11.5.", {10.0, 4.0, 1.0}) is False  # 9 from nowhere
    assert step_holds("3 * 4 = 13", {3.0, 4.0}) is False


def test_split_steps_strips_list_markers_and_splits_a_single_line_into_sentences():
    assert split_steps("Step 1: 3 * 4 = 12\n2) 5 + 12 = 17\n- The answer is 17.") == [
        "3 * 4 = 12",
        "5 + 12 = 17",
        "The answer is 17.",
    ]
    assert split_steps("First 3 * 4 = 12. Then 5 + 12 = 17.") == ["First 3 * 4 = 12.", "Then 5 + 12 = 17."]
    assert split_steps("") == []


def test_final_answer_prefers_the_answer_phrase_over_the_last_equation():
    assert final_answer(["3 * 4 = 12", "The answer is 1,200."]) == 1200
    assert final_answer(["3 * 4 = 12"]) == 12
    assert final_answer(["nothing here"]) is None
