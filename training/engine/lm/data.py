"""Preference rows → token spans with per-token weights, templated with the model's chat template.

Row formats (TRL preference rows, as a DatasetVersion exports them):

* standard: ``{"prompt": str, "chosen": str, "rejected": str}`` — wrapped as one user turn and one
  assistant turn, then templated like conversational rows;
* conversational: ``{"prompt": [{"role", "content"}...], "chosen": [{"role": "assistant", ...}], ...}``;
* Step-DPO adds ``initial_reason_steps: str`` — it opens the assistant turn; only the step's tokens
  (the chosen/rejected content, not the template's closing tokens) carry weight;
* Mask-DPO adds ``chosen_sentences`` / ``rejected_sentences``:
  ``[{"start": int, "end": int, "label": "factual" | "hallucinated" | "no_claim"}]`` with character offsets
  into the response text; chosen tokens weigh 1 inside factual sentences, rejected tokens inside
  hallucinated ones, every other token 0.  A token counts for a sentence when their characters overlap.
* CREAM adds ``consistency``: a number in [0, 1], the pair's self-consistency C (a row without one, or with
  null, counts 1.0); ``TokenizedPair.consistency`` carries it to the collated batch.

Truncation rule (TRL's ``keep_start``): each of prompt+chosen and prompt+rejected is cut to ``max_length``
tokens from the start; a row whose prompt alone fills ``max_length``, or whose chosen or rejected keeps no
weighted token, is dropped and counted in ``TokenizeReport.dropped`` by reason; so is a row whose
``consistency`` is not a number (``consistency_not_a_number``) or lies outside [0, 1]
(``consistency_outside_0_1``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

SENTENCE_LABELS = {"factual", "hallucinated", "no_claim"}
IMAGE_FIELDS = ("images", "jpg_0", "jpg_1")
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class TokenizedPair:
    """One preference pair as token ids; weights are per response token (1.0 = counts, 0.0 = masked)."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_weights: tuple[float, ...]
    rejected_weights: tuple[float, ...]
    index: int
    """Position of the row in the source file (after split filtering)."""
    consistency: float = 1.0
    """CREAM's per-pair consistency C in [0, 1], from the row's ``consistency`` field (1.0 without one)."""


@dataclass
class TokenizeReport:
    """What tokenization kept and what it dropped, by reason."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)


def read_rows(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL or Parquet export; with ``split`` set, only rows whose ``split`` column matches
    (rows without a ``split`` value count as train)."""
    path = Path(path)
    with path.open("rb") as fh:
        if fh.read(4) == ZIP_MAGIC:
            raise ValueError(
                f"{path.name}: a zip archive (an image dataset's export), not preference rows; "
                "the text recipes train on JSONL or Parquet rows"
            )
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        with path.open(encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    if split is None:
        return rows
    return [r for r in rows if (r.get("split") or "train") == split]


def _messages(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation: bool) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    text = "\n\n".join(m["content"] for m in messages)
    return text + ("\n\n" if generation else (tokenizer.eos_token or ""))


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: Any) -> list[int]:
    """Token ids of a prompt (a string or chat messages) rendered up to the start of the assistant's reply,
    as generation sees it."""
    text = _render(tokenizer, _messages(prompt, "user"), True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render_side(tokenizer, prompt_msgs, prefix: str, response: list[dict]) -> tuple[str, int]:
    """Full text of prompt + response and the char where the response content starts."""
    head = _render(tokenizer, prompt_msgs, True) + prefix
    reply = [dict(m) for m in response]
    reply[0]["content"] = prefix + reply[0]["content"]
    full = _render(tokenizer, prompt_msgs + reply, False)
    if not full.startswith(head):
        raise ValueError("chat template does not render the prompt as a prefix of prompt + response")
    return full, len(head)


def _token_spans(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _weights(offsets, allowed: Sequence[tuple[int, int]] | None) -> tuple[float, ...]:
    if allowed is None:
        return tuple(1.0 for _ in offsets)
    return tuple(1.0 if any(s < e2 and s2 < e for s2, e2 in allowed) else 0.0 for s, e in offsets)


def _allowed_spans(row: dict, side: str, content_start: int, content_len: int, step: bool):
    """Character spans (absolute in the rendered text) whose tokens carry weight, or None for all."""
    key = f"{side}_sentences"
    if key in row and row[key] is not None:
        wanted = "factual" if side == "chosen" else "hallucinated"
        spans = []
        for sent in row[key]:
            if sent["label"] not in SENTENCE_LABELS:
                raise ValueError(f"{key}: label {sent['label']!r} not in {sorted(SENTENCE_LABELS)}")
            if sent["label"] == wanted:
                spans.append((content_start + int(sent["start"]), content_start + int(sent["end"])))
        return spans
    if step:
        return [(content_start, content_start + content_len)]
    return None


def row_consistency(row: dict) -> tuple[float, str | None]:
    """The row's consistency C (1.0 when absent or null), or ``(1.0, reason)`` when it is unusable."""
    value = row.get("consistency")
    if value is None:
        return 1.0, None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return 1.0, "consistency_not_a_number"
    if not 0.0 <= value <= 1.0:
        return 1.0, "consistency_outside_0_1"
    return float(value), None


def tokenize_pair(row: dict, tokenizer: PreTrainedTokenizerBase, index: int) -> TokenizedPair:
    """Template and tokenize one row (no truncation); raises ValueError on a malformed row, and on a row
    with images, which a text recipe would train on as if they were not there."""
    images = [key for key in IMAGE_FIELDS if row.get(key)]
    if images:
        raise ValueError(
            f"row {index}: has images ({', '.join(images)}); the text recipes would train on its text alone "
            "— this dataset needs an image-aware method"
        )
    for key in ("prompt", "chosen", "rejected"):
        if key not in row:
            raise ValueError(f"row {index}: missing field {key!r}")
    consistency, problem = row_consistency(row)
    if problem is not None:
        raise ValueError(f"row {index}: {problem.replace('_', ' ')} ({row['consistency']!r})")
    prompt_msgs = _messages(row["prompt"], "user")
    prefix = row.get("initial_reason_steps") or ""
    step = "initial_reason_steps" in row
    sides = {}
    for side in ("chosen", "rejected"):
        response = _messages(row[side], "assistant")
        full, content_start = _render_side(tokenizer, prompt_msgs, prefix, response)
        ids, offsets = _token_spans(tokenizer, full)
        split = next((i for i, (s, _) in enumerate(offsets) if s >= content_start), len(ids))
        content_len = len(response[0]["content"])
        allowed = _allowed_spans(row, side, content_start, content_len, step)
        sides[side] = (ids[:split], ids[split:], _weights(offsets[split:], allowed))
    prompt_ids = sides["chosen"][0]
    if sides["rejected"][0] != prompt_ids:
        raise ValueError(f"row {index}: prompt tokenizes differently before chosen and rejected")
    return TokenizedPair(
        prompt_ids=tuple(prompt_ids),
        chosen_ids=tuple(sides["chosen"][1]),
        rejected_ids=tuple(sides["rejected"][1]),
        chosen_weights=sides["chosen"][2],
        rejected_weights=sides["rejected"][2],
        index=index,
        consistency=consistency,
    )


def truncate(pair: TokenizedPair, max_length: int | None) -> tuple[TokenizedPair | None, str | None]:
    """Apply the keep-start rule; returns (pair, None) or (None, reason it was dropped)."""
    if max_length is not None:
        room = max_length - len(pair.prompt_ids)
        if room <= 0:
            return None, "prompt_fills_max_length"
        pair = replace(
            pair,
            chosen_ids=pair.chosen_ids[:room],
            rejected_ids=pair.rejected_ids[:room],
            chosen_weights=pair.chosen_weights[:room],
            rejected_weights=pair.rejected_weights[:room],
        )
    if not any(pair.chosen_weights):
        return None, "chosen_has_no_weighted_token"
    if not any(pair.rejected_weights):
        return None, "rejected_has_no_weighted_token"
    return pair, None


def tokenize_rows(
    rows: Iterable[dict], tokenizer: PreTrainedTokenizerBase, *, max_length: int | None
) -> tuple[list[TokenizedPair], TokenizeReport]:
    """Tokenize and truncate every row (one with an unusable ``consistency`` is dropped before); returns
    kept pairs (in order) and the report."""
    report = TokenizeReport()
    kept = []
    for index, row in enumerate(rows):
        pair, reason = None, row_consistency(row)[1]
        if reason is None:
            pair, reason = truncate(tokenize_pair(row, tokenizer, index), max_length)
        if pair is None:
            report.dropped[reason] += 1
            continue
        kept.append(pair)
    report.kept = len(kept)
    return kept, report
