"""Distribution-shift rules: which preference rows count as *shifted* and which as *in-distribution*.

A rule is one of three kinds a user sets on a dataset version's held-out rows:

* ``source`` — rows whose ``source`` field (where the item came from, e.g. the import file) is one of
  ``values`` are shifted;
* ``metadata`` — rows whose ``metadata[key]`` (compared as text) is one of ``values`` are shifted;
  rows without that key are in-distribution;
* ``prompt_length`` — rows whose prompt is longer than ``threshold`` characters (``unit="chars"``) or
  tokens (``unit="tokens"``, the tokenizer's count of the prompt's text) are shifted.

A conversational prompt's text is its turns' contents joined by newlines.  A rule that cannot apply — a
row without the field it reads, or a split it leaves empty — raises ``ValueError`` naming the rule's field
(``kind``, ``values``, ``key``, ``threshold``, ``unit``, or ``source`` / ``metadata`` for a row).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SHIFT_KINDS = ("source", "metadata", "prompt_length")
LENGTH_UNITS = ("chars", "tokens")
MAX_VALUES = 50
"""The most values one rule may list."""


@dataclass(frozen=True)
class ShiftRule:
    """Which rows are shifted; every bad field raises ValueError naming it."""

    kind: str
    """``source``, ``metadata`` or ``prompt_length``."""
    values: tuple[str, ...] = ()
    """``source`` / ``metadata``: the values that make a row shifted."""
    key: str = ""
    """``metadata``: the metadata key read."""
    threshold: int | None = None
    """``prompt_length``: prompts longer than this are shifted."""
    unit: str = "chars"
    """``prompt_length``: ``chars`` or ``tokens``."""

    def __post_init__(self) -> None:
        if self.kind not in SHIFT_KINDS:
            raise ValueError(f"kind: unknown shift rule {self.kind!r}; choose from {list(SHIFT_KINDS)}")
        if self.kind == "prompt_length":
            self._check_length()
            return
        values = tuple(str(v).strip() for v in self.values)
        if not values or any(v == "" for v in values):
            raise ValueError("values: list at least one non-empty value that marks a row as shifted")
        if len(values) > MAX_VALUES:
            raise ValueError(f"values: at most {MAX_VALUES} values, got {len(values)}")
        object.__setattr__(self, "values", values)
        if self.kind == "metadata" and not (isinstance(self.key, str) and self.key.strip()):
            raise ValueError("key: name the metadata key the rule reads")

    def _check_length(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"threshold: must be a whole number of at least 0, got {t!r}")
        if self.unit not in LENGTH_UNITS:
            raise ValueError(f"unit: chars or tokens, got {self.unit!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShiftRule:
        """The rule ``to_dict`` wrote (unknown fields raise ValueError naming the first)."""
        known = {"kind", "values", "key", "threshold", "unit"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field of a shift rule")
        data = dict(data)
        data["values"] = tuple(data.get("values") or ())
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "prompt_length":
            return {"kind": self.kind, "threshold": self.threshold, "unit": self.unit}
        out: dict[str, Any] = {"kind": self.kind, "values": list(self.values)}
        return {**out, "key": self.key} if self.kind == "metadata" else out

    def describe(self) -> str:
        """The rule in words, for a report."""
        if self.kind == "prompt_length":
            return f"prompt longer than {self.threshold} {self.unit}"
        field = "source" if self.kind == "source" else f"metadata {self.key!r}"
        return f"{field} in {', '.join(self.values)}"


@dataclass(frozen=True)
class ShiftSplit:
    """Rows (in their input order) on each side of a rule."""

    in_distribution: list[dict]
    shifted: list[dict]


def prompt_text(prompt: Any) -> str:
    """A prompt's text: the string, or a conversation's contents joined by newlines."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    raise ValueError(f"prompt: expected text or chat messages, got {type(prompt).__name__}")


def _value_reader(rule: ShiftRule) -> Callable[[dict, int], str | None]:
    """The function reading the rule's field of row ``i`` (None: the row has no value for it)."""
    if rule.kind == "source":

        def source(row: dict, i: int) -> str | None:
            if "source" not in row:
                raise ValueError(f"source: row {i} has no source field, so a rule by source cannot apply")
            return None if row["source"] is None else str(row["source"])

        return source

    def metadata(row: dict, i: int) -> str | None:
        meta = row.get("metadata")
        if not isinstance(meta, dict):
            raise ValueError(f"metadata: row {i} has no metadata, so a rule by metadata cannot apply")
        value = meta.get(rule.key)
        return None if value is None else str(value)

    return metadata


def _length_of(rule: ShiftRule, tokenizer) -> Callable[[dict, int], int]:
    if rule.unit == "tokens" and tokenizer is None:
        raise ValueError("unit: counting prompt tokens needs the model's tokenizer")

    def length(row: dict, i: int) -> int:
        if "prompt" not in row:
            raise ValueError(f"prompt: row {i} has no prompt")
        text = prompt_text(row["prompt"])
        if rule.unit == "chars":
            return len(text)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return length


def _split_by_value(rows: Sequence[dict], rule: ShiftRule) -> ShiftSplit:
    read = _value_reader(rule)
    values = [read(row, i) for i, row in enumerate(rows)]
    wanted = set(rule.values)
    split = ShiftSplit(
        [r for r, v in zip(rows, values, strict=True) if v not in wanted],
        [r for r, v in zip(rows, values, strict=True) if v in wanted],
    )
    seen = Counter(v for v in values if v is not None)
    field = "source" if rule.kind == "source" else f"metadata {rule.key!r}"
    if rule.kind == "metadata" and not seen:
        raise ValueError(f"key: no row has the metadata key {rule.key!r}")
    listed = ", ".join(f"{v} ({n})" for v, n in seen.most_common(10)) or "none"
    if not split.shifted:
        raise ValueError(f"values: no row has {field} in {list(rule.values)}; values seen: {listed}")
    if not split.in_distribution:
        raise ValueError(f"values: every row has {field} in {list(rule.values)}: no in-distribution row left")
    return split


def _split_by_length(rows: Sequence[dict], rule: ShiftRule, tokenizer) -> ShiftSplit:
    length = _length_of(rule, tokenizer)
    lengths = [length(row, i) for i, row in enumerate(rows)]
    split = ShiftSplit(
        [r for r, n in zip(rows, lengths, strict=True) if n <= rule.threshold],
        [r for r, n in zip(rows, lengths, strict=True) if n > rule.threshold],
    )
    span = f"prompt lengths run from {min(lengths)} to {max(lengths)} {rule.unit}" if lengths else "no rows"
    if not split.shifted or not split.in_distribution:
        side = "shifted" if not split.shifted else "in-distribution"
        raise ValueError(f"threshold: {rule.threshold} {rule.unit} leaves no {side} row ({span})")
    return split


def split_by_shift(rows: Sequence[dict], rule: ShiftRule, *, tokenizer=None) -> ShiftSplit:
    """Rows cut into in-distribution and shifted by ``rule`` (``tokenizer``: for ``unit="tokens"``);
    ValueError naming the field when the rule cannot apply or leaves a side empty."""
    if rule.kind == "prompt_length":
        return _split_by_length(rows, rule, tokenizer)
    return _split_by_value(rows, rule)
