"""TRL preference rows (standard or conversational, explicit or implicit prompt) and responses lists."""

from itertools import combinations

from annotation.builders.arithmetic import split_steps

from . import fields
from .context import ParseContext
from .records import CandidateIn, JudgmentIn, RowError, RowIn, TaskIn

PAIR_COLUMNS = {"prompt", "chosen", "rejected"}


def shared_prefix_length(chosen, rejected) -> int:
    """TRL's ``extract_prompt`` rule: the longest common prefix, not ending on a space."""
    length = 0
    for left, right in zip(chosen, rejected, strict=False):
        if left != right:
            break
        length += 1
    if isinstance(chosen, str) and length and chosen[length - 1] == " ":
        length -= 1
    return length


def prompt_fields(value, field: str, *, conversational: bool) -> tuple[str, list[dict] | None]:
    """(Item.prompt, Item.messages) from a string prompt or a message list."""
    if conversational or isinstance(value, list):
        turns = fields.messages(value, field)
        return fields.last_user_text(turns), turns
    return fields.text(value, field), None


def completion(value, field: str, *, conversational: bool) -> CandidateIn:
    if conversational:
        turns = fields.messages(value, field)
        return CandidateIn(text=fields.joined_text(turns), messages=turns)
    if isinstance(value, list):
        raise RowError(field, "expected a string like the file's first row, got a list of messages")
    return CandidateIn(text=fields.text(value, field))


def pair_task() -> list[TaskIn]:
    return [TaskIn((0, 1), JudgmentIn(choice="a"))]


def check_different(chosen: CandidateIn, rejected: CandidateIn) -> None:
    if chosen.content() == rejected.content():
        raise RowError("rejected", "is identical to chosen")


def parse_pair(record: dict, line: int, ctx: ParseContext) -> RowIn:
    fmt = ctx.fmt
    fields.require(
        record, ["prompt", "chosen", "rejected"] if fmt.explicit_prompt else ["chosen", "rejected"]
    )
    if fmt.explicit_prompt:
        prompt, turns = prompt_fields(record["prompt"], "prompt", conversational=fmt.conversational)
        chosen = completion(record["chosen"], "chosen", conversational=fmt.conversational)
        rejected = completion(record["rejected"], "rejected", conversational=fmt.conversational)
    else:
        prompt, turns, chosen, rejected = _implicit(record, fmt.conversational)
    check_different(chosen, rejected)
    return RowIn(
        line=line,
        prompt=prompt,
        messages=turns,
        candidates=[chosen, rejected],
        tasks=pair_task(),
        split=fields.split_of(record),
        metadata=fields.metadata_of(record, PAIR_COLUMNS),
    )


def _implicit(record: dict, conversational: bool):
    if conversational:
        chosen_all = fields.messages(record["chosen"], "chosen")
        rejected_all = fields.messages(record["rejected"], "rejected")
    else:
        chosen_all = fields.text(record["chosen"], "chosen")
        rejected_all = fields.text(record["rejected"], "rejected")
    if chosen_all == rejected_all:
        raise RowError("rejected", "is identical to chosen")
    shared = shared_prefix_length(chosen_all, rejected_all)
    if shared == 0:
        raise RowError("chosen", "implicit prompt: chosen and rejected share no leading prompt")
    for name, value in (("chosen", chosen_all), ("rejected", rejected_all)):
        if not value[shared:] or (isinstance(value, str) and not value[shared:].strip()):
            raise RowError(name, "is empty after the shared prompt")
    if conversational:
        prompt_turns = chosen_all[:shared]
        chosen = CandidateIn(text=fields.joined_text(chosen_all[shared:]), messages=chosen_all[shared:])
        rejected = CandidateIn(text=fields.joined_text(rejected_all[shared:]), messages=rejected_all[shared:])
        return fields.last_user_text(prompt_turns), prompt_turns, chosen, rejected
    return (
        chosen_all[:shared],
        None,
        CandidateIn(text=chosen_all[shared:]),
        CandidateIn(text=rejected_all[shared:]),
    )


def response_candidates(value, field: str) -> list[CandidateIn]:
    responses = fields.items_list(value, field, minimum=2)
    candidates = [
        completion(response, f"{field}[{index}]", conversational=isinstance(response, list))
        for index, response in enumerate(responses)
    ]
    seen = {}
    for index, candidate in enumerate(candidates):
        key = repr(candidate.content())
        if key in seen:
            raise RowError(f"{field}[{index}]", f"is identical to {field}[{seen[key]}]")
        seen[key] = index
    return candidates


def response_tasks(count: int, task_type: str) -> list[TaskIn]:
    if task_type == "ranking":
        return [TaskIn(tuple(range(count)))]
    return [TaskIn(pair) for pair in combinations(range(count), 2)]


def parse_responses(record: dict, line: int, ctx: ParseContext) -> RowIn:
    """A prompt and its responses: pairs to judge (every pair), one ranking task, or, in a step-wise
    project, each response a solution to label step by step (its lines are its steps, as a generated
    solution's are; an ``answer`` column is kept for checking)."""
    fields.require(record, ["prompt", "responses"])
    prompt, turns = prompt_fields(record["prompt"], "prompt", conversational=False)
    candidates = response_candidates(record["responses"], "responses")
    metadata = fields.metadata_of(record, {"prompt", "responses"})
    tasks = response_tasks(len(candidates), ctx.task_type)
    if ctx.task_type == "stepwise":
        for candidate in candidates:
            if candidate.messages:
                raise RowError("responses", "step-wise solutions are text, not chat messages")
            candidate.steps = split_steps(candidate.text) or [candidate.text]
        tasks = [TaskIn((index,)) for index in range(len(candidates))]
    return RowIn(
        line=line,
        prompt=prompt,
        messages=turns,
        candidates=candidates,
        tasks=tasks,
        split=fields.split_of(record),
        metadata=metadata,
    )
