"""Factuality rows: a prompt and responses, each a string or {text, sentences: [{text, label}]}."""

from annotation.text.sentences import split_sentences

from . import fields
from .context import ParseContext
from .readers import type_name
from .records import CandidateIn, JudgmentIn, RowError, RowIn, TaskIn


def _label(value, field: str):
    if isinstance(value, bool | int) or (isinstance(value, str) and value.strip()):
        return value
    raise RowError(field, f"expected a label (true/false or a word), got {type_name(value)}")


def _sentences(value, field: str) -> tuple[list[str], list | None]:
    entries = fields.items_list(value, field, minimum=1, maximum=10_000)
    sentences, labels = [], []
    for index, entry in enumerate(entries):
        where = f"{field}[{index}]"
        if isinstance(entry, str):
            sentences.append(fields.text(entry, where))
            labels.append(None)
        elif isinstance(entry, dict):
            fields.require(entry, ["text"])
            sentences.append(fields.text(entry["text"], f"{where}.text"))
            labels.append(
                _label(entry["label"], f"{where}.label") if entry.get("label") is not None else None
            )
        else:
            raise RowError(where, f"expected a sentence string or {{text, label}}, got {type_name(entry)}")
    if all(label is None for label in labels):
        return sentences, None
    if any(label is None for label in labels):
        missing = labels.index(None)
        raise RowError(f"{field}[{missing}].label", "is missing while other sentences have labels")
    return sentences, labels


def _response(value, field: str) -> tuple[CandidateIn, list | None]:
    if isinstance(value, str):
        text = fields.text(value, field)
        return CandidateIn(text=text, sentences=split_sentences(text)), None
    if not isinstance(value, dict):
        raise RowError(field, f"expected a string or {{text, sentences}}, got {type_name(value)}")
    if value.get("text") is None:
        raise RowError(f"{field}.text", "is missing")
    text = fields.text(value["text"], f"{field}.text")
    if value.get("sentences") is None:
        return CandidateIn(text=text, sentences=split_sentences(text)), None
    sentences, labels = _sentences(value["sentences"], f"{field}.sentences")
    return CandidateIn(text=text, sentences=sentences), labels


def parse_factuality(record: dict, line: int, ctx: ParseContext) -> RowIn:
    fields.require(record, ["prompt", "responses"])
    prompt = fields.text(record["prompt"], "prompt")
    responses = fields.items_list(record["responses"], "responses", minimum=1)
    candidates, tasks = [], []
    for index, response in enumerate(responses):
        candidate, labels = _response(response, f"responses[{index}]")
        candidates.append(candidate)
        tasks.append(TaskIn((index,), JudgmentIn(sentence_labels=labels) if labels is not None else None))
    return RowIn(
        line=line,
        prompt=prompt,
        candidates=candidates,
        tasks=tasks,
        split=fields.split_of(record),
        metadata=fields.metadata_of(record, {"prompt", "responses"}),
    )
