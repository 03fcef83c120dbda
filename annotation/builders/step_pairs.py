"""Step-DPO pairs from automatically checked solutions (pure: no Django).

For a problem with a verifiable answer: check a sampled solution's steps, locate the first wrong one,
resample continuations from the correct prefix and keep those whose steps all hold and reach the right
answer; the first new step of such a continuation is ``chosen``, the wrong step ``rejected``. The
sampler is ``sampler(question=, prefix=, n=, seed=) -> [continuation text]``: the engine's model in
production (``model_step_sampler``), a seeded fake in tests.
"""

from collections.abc import Callable
from dataclasses import dataclass

from annotation.builders.arithmetic import StepCheck, solution_check, split_steps

StepSampler = Callable[..., list[str]]


@dataclass(frozen=True)
class StepPair:
    """One Step-DPO example: the correct prefix, a correct next step and the first wrong step."""

    prompt: str
    initial_reason_steps: tuple[str, ...]
    chosen: str
    rejected: str
    answer: str
    continuation: tuple[str, ...]


def continuation_prompt(question: str, prefix: list[str]) -> str:
    """The prompt a model continues from: the question and the correct steps so far."""
    done = "\n".join(prefix) if prefix else "(no steps yet)"
    return (
        f"{question}\n\nSolve it step by step, one step per line, and end with: The answer is N.\n"
        f"Steps so far:\n{done}\nContinue with the next step."
    )


def step_pairs_for_solution(
    *, question: str, answer, steps: list[str], sampler: StepSampler, n: int = 4, seed: int = 0
) -> tuple[StepCheck, list[StepPair]]:
    """Check ``steps``; when one is wrong, resample ``n`` continuations and pair each correct first step."""
    value = number_of(answer)
    if value is None:
        raise ValueError(f"answer {answer!r} is not a number")
    check = solution_check(question=question, steps=steps, answer=value)
    if check.first_wrong is None:
        return check, []
    prefix, rejected = steps[: check.first_wrong], steps[check.first_wrong]
    pairs, seen = [], {_norm(rejected)}
    for text in sampler(question=question, prefix=prefix, n=n, seed=seed):
        continuation = _without_repeats(split_steps(text), prefix)
        if not continuation or _norm(continuation[0]) in seen:
            continue
        if solution_check(question=question, steps=prefix + continuation, answer=value).correct:
            seen.add(_norm(continuation[0]))
            pairs.append(
                StepPair(question, tuple(prefix), continuation[0], rejected, str(answer), tuple(continuation))
            )
    return check, pairs


def _without_repeats(continuation: list[str], prefix: list[str]) -> list[str]:
    """Drop leading steps that only restate the prefix (models often start by repeating it)."""
    done = {_norm(step) for step in prefix}
    start = 0
    while start < len(continuation) and _norm(continuation[start]) in done:
        start += 1
    return continuation[start:]


def _norm(step: str) -> str:
    return " ".join(step.lower().split())


def number_of(value) -> float | None:
    try:
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def model_step_sampler(sample) -> StepSampler:
    """Adapt a generation sampler (prompts, settings, seed) into a step sampler."""

    def step_sampler(*, question: str, prefix: list[str], n: int, seed: int) -> list[str]:
        return sample([continuation_prompt(question, prefix)] * n, seed)

    return step_sampler
