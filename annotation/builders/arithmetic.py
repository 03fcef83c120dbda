"""Arithmetic word problems whose every solution step is a verifiable ``a op b = c``, and a step checker.

``problem_generate(seed)`` always gives the same problem for the same seed. A solution is a list of steps
(lines); ``solution_check`` parses each step's equations and finds the first wrong one: a step is wrong
when an equation does not hold or when it uses a number that is neither in the question nor the result
of an earlier step. A solution whose steps all hold but whose final answer differs is wrong at its last
step. This is the automatic checker of the Step-DPO pipeline (``annotation.services.step_pipeline``).
"""

import random
import re
from dataclasses import dataclass

from annotation.text.sentences import split_sentences

NUMBER = r"-?\d+(?:\.\d+)?"
EQUATION = re.compile(rf"({NUMBER})\s*([-+*/×x÷])\s*({NUMBER})\s*=\s*({NUMBER})")
ANSWER = re.compile(rf"(?:answer|result|total)\D{{0,20}}?({NUMBER})", re.IGNORECASE)
_STEP_PREFIX = re.compile(r"^\s*(?:step\s*\d+\s*[:.)-]|\d+[.)]|[-*•])\s*", re.IGNORECASE)

NAMES = ("Ann", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas")
THINGS = ("apples", "marbles", "stickers", "books", "coins", "shells", "pencils", "cards")


@dataclass(frozen=True)
class Problem:
    """A word problem, its correct steps (one equation each) and its integer answer."""

    question: str
    steps: tuple[str, ...]
    answer: int
    seed: int


@dataclass(frozen=True)
class StepCheck:
    """What the checker found: the first wrong step's index (None when all hold) and the final answer."""

    first_wrong: int | None
    answer: float | None
    correct: bool


def _apply(op: str, a: float, b: float) -> float | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*×x":
        return a * b
    if op in "/÷":
        return a / b if b else None
    return None


def problem_generate(seed: int) -> Problem:
    """A seeded problem with 2 to 4 steps: start, add groups, give some away, share equally."""
    rng = random.Random(seed)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    start, groups, per = rng.randint(3, 40), rng.randint(2, 9), rng.randint(2, 12)
    bought = groups * per
    total = start + bought
    sentences = [
        f"{name} has {start} {thing}.",
        f"{name} buys {groups} boxes with {per} {thing} in each box.",
    ]
    steps = [f"{groups} * {per} = {bought}", f"{start} + {bought} = {total}"]
    answer = total
    if rng.random() < 0.7:
        given = rng.randint(1, total - 1)
        answer = total - given
        sentences.append(f"Then {name} gives {given} {thing} to a friend.")
        steps.append(f"{total} - {given} = {answer}")
    if rng.random() < 0.5:
        friends = rng.choice([d for d in range(2, 7) if answer % d == 0] or [1])
        if friends > 1:
            sentences.append(f"{name} shares the {thing} equally among {friends} bags.")
            steps.append(f"{answer} / {friends} = {answer // friends}")
            answer //= friends
            question_end = f"How many {thing} are in each bag?"
        else:
            question_end = f"How many {thing} does {name} have now?"
    else:
        question_end = f"How many {thing} does {name} have now?"
    question = " ".join([*sentences, question_end])
    return Problem(question=question, steps=tuple(steps), answer=answer, seed=seed)


def solution_text(problem: Problem) -> str:
    """The reference solution: one step per line and a final answer line."""
    return "\n".join([*problem.steps, f"The answer is {problem.answer}."])


def split_steps(text: str) -> list[str]:
    """Steps of a solution: its non-empty lines (list markers removed), or its sentences for one line."""
    lines = [_STEP_PREFIX.sub("", line).strip() for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) == 1:
        return split_sentences(lines[0])
    return lines


def join_steps(steps) -> str:
    """Steps as Step-DPO's ``initial_reason_steps``: each ended by a newline, as imported Step-DPO rows
    are, so that prompt + steps + the next step keeps that step on a line of its own ("" for no step)."""
    return "".join(f"{step}\n" for step in steps)


def _numbers(text: str) -> set[float]:
    return {float(n) for n in re.findall(NUMBER, text)}


def step_holds(step: str, known: set[float]) -> bool | None:
    """True/False for a step with equations (all must hold and use known operands); None for prose."""
    equations = EQUATION.findall(step.replace(",", ""))
    if not equations:
        return None
    known = set(known)
    for a, op, b, c in equations:
        value = _apply(op, float(a), float(b))
        if value is None or abs(value - float(c)) > 1e-6 or not {float(a), float(b)} <= known:
            return False
        known.add(float(c))  # a later equation of the same step may use this result
    return True


def final_answer(steps: list[str]) -> float | None:
    """The number after "answer" in the last steps, else the result of the last equation."""
    for step in reversed(steps):
        found = ANSWER.findall(step.replace(",", ""))
        if found:
            return float(found[-1])
    for step in reversed(steps):
        equations = EQUATION.findall(step.replace(",", ""))
        if equations:
            return float(equations[-1][3])
    return None


def solution_check(*, question: str, steps: list[str], answer: float) -> StepCheck:
    """Locate the first wrong step of ``steps`` for a problem whose correct answer is ``answer``."""
    known = _numbers(question)
    for index, step in enumerate(steps):
        if step_holds(step, known) is False:
            return StepCheck(first_wrong=index, answer=final_answer(steps[: index + 1]), correct=False)
        known |= {float(c) for *_, c in EQUATION.findall(step.replace(",", ""))}
    found = final_answer(steps)
    if found is not None and abs(found - float(answer)) < 1e-6:
        return StepCheck(first_wrong=None, answer=found, correct=True)
    return StepCheck(first_wrong=max(len(steps) - 1, 0) if steps else None, answer=found, correct=False)
