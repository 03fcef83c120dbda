"""Multi-image rows: an ``images`` list plus a prompt or messages, and chosen/rejected or responses."""

from . import fields
from .context import ParseContext
from .records import RowError, RowIn
from .trl import check_different, completion, pair_task, prompt_fields, response_candidates, response_tasks

COLUMNS = {"images", "prompt", "messages", "chosen", "rejected", "responses"}
MAX_IMAGES = 32


def parse_multi_image(record: dict, line: int, ctx: ParseContext) -> RowIn:
    fields.require(record, ["images"])
    if record.get("prompt") is None and record.get("messages") is None:
        raise RowError("prompt", "is missing (give a prompt or messages)")
    prompt_field = "prompt" if record.get("prompt") is not None else "messages"
    prompt, turns = prompt_fields(
        record[prompt_field], prompt_field, conversational=prompt_field == "messages"
    )
    values = fields.items_list(record["images"], "images", minimum=1, maximum=MAX_IMAGES)
    images = [ctx.stager.stage(value, f"images[{index}]") for index, value in enumerate(values)]
    if record.get("responses") is not None:
        candidates = response_candidates(record["responses"], "responses")
        tasks = response_tasks(len(candidates), "pairwise")
    else:
        fields.require(record, ["chosen", "rejected"])
        candidates = [
            completion(record[name], name, conversational=isinstance(record[name], list))
            for name in ("chosen", "rejected")
        ]
        check_different(*candidates)
        tasks = pair_task()
    return RowIn(
        line=line,
        prompt=prompt,
        messages=turns,
        images=images,
        candidates=candidates,
        tasks=tasks,
        split=fields.split_of(record),
        metadata=fields.metadata_of(record, COLUMNS),
    )
