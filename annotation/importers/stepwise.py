"""Step-wise rows (Step-DPO): prompt, initial_reason_steps, chosen and rejected next steps, answer."""

from . import fields
from .context import ParseContext
from .readers import type_name
from .records import CandidateIn, RowError, RowIn
from .trl import check_different, pair_task

COLUMNS = {"prompt", "initial_reason_steps", "chosen", "rejected", "answer"}


def steps_candidate(value, field: str) -> CandidateIn:
    """A step (string) or a list of steps."""
    if isinstance(value, list):
        if not value:
            raise RowError(field, "is an empty list of steps")
        steps = [fields.text(step, f"{field}[{index}]") for index, step in enumerate(value)]
        return CandidateIn(text="\n".join(steps), steps=steps)
    step = fields.text(value, field)
    return CandidateIn(text=step, steps=[step])


def parse_stepwise(record: dict, line: int, ctx: ParseContext) -> RowIn:
    fields.require(record, ["prompt", "initial_reason_steps", "chosen", "rejected"])
    prompt = fields.text(record["prompt"], "prompt")
    initial = record["initial_reason_steps"]
    if not isinstance(initial, str):
        raise RowError(
            "initial_reason_steps", f"expected a string (it may be empty), got {type_name(initial)}"
        )
    chosen = steps_candidate(record["chosen"], "chosen")
    rejected = steps_candidate(record["rejected"], "rejected")
    check_different(chosen, rejected)
    metadata = fields.metadata_of(record, COLUMNS)
    metadata["initial_reason_steps"] = initial
    answer = fields.optional_text(record, "answer")
    if answer is not None:
        metadata["answer"] = answer
    return RowIn(
        line=line,
        prompt=prompt,
        candidates=[chosen, rejected],
        tasks=pair_task(),
        split=fields.split_of(record),
        metadata=metadata,
    )
