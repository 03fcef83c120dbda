"""Anthropic HH rows: ``chosen``/``rejected`` full transcripts in "\\n\\nHuman: … \\n\\nAssistant: …" form."""

import re

from . import fields
from .context import ParseContext
from .records import CandidateIn, RowError, RowIn
from .trl import check_different, pair_task

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(value, field: str) -> list[dict]:
    """Turns ``[{role, content}]`` of one transcript; text before the first turn is an error."""
    transcript = fields.text(value, field)
    if transcript.lstrip().startswith(("Human:", "Assistant:")):
        transcript = "\n\n" + transcript.lstrip()
    parts = _TURN.split(transcript)
    if parts[0].strip():
        raise RowError(field, "does not start with a '\\n\\nHuman:' turn")
    turns = [{"role": _ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if not turns:
        raise RowError(field, "holds no 'Human:' / 'Assistant:' turns")
    return turns


def parse_hh(record: dict, line: int, ctx: ParseContext) -> RowIn:
    fields.require(record, ["chosen", "rejected"])
    chosen = parse_transcript(record["chosen"], "chosen")
    rejected = parse_transcript(record["rejected"], "rejected")
    if chosen == rejected:
        raise RowError("rejected", "is identical to chosen")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise RowError("chosen", "chosen and rejected share no leading Human turn")
    candidates = [
        _final_turns(turns[shared:], name, shared)
        for name, turns in (("chosen", chosen), ("rejected", rejected))
    ]
    check_different(*candidates)
    prompt_turns = chosen[:shared]
    return RowIn(
        line=line,
        prompt=fields.last_user_text(prompt_turns),
        messages=prompt_turns,
        candidates=candidates,
        tasks=pair_task(),
        split=fields.split_of(record),
        metadata=fields.metadata_of(record, {"chosen", "rejected"}),
    )


def _final_turns(turns: list[dict], field: str, shared: int) -> CandidateIn:
    if not turns:
        raise RowError(field, "has no turn after the shared conversation")
    if turns[0]["role"] != "assistant":
        raise RowError(
            field, f"differs from the other transcript at Human turn {shared + 1}, not in an Assistant reply"
        )
    for turn in turns:
        if not turn["content"]:
            raise RowError(
                field, f"the final {'Assistant' if turn['role'] == 'assistant' else 'Human'} turn is empty"
            )
    return CandidateIn(text=fields.joined_text(turns), messages=turns)
