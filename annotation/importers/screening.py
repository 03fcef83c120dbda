"""What every record passes before its parser sees it: text PostgreSQL can store, bounded nesting, and
per-field size limits.

A NUL or a lone surrogate anywhere in a record (``annotation.text.storable``) would fail the write after
the whole file was validated; a 200 MB prompt is valid text but makes its task unusable.  So every string
of a record, keys included, is checked here, and each problem becomes a row error naming the line and the
field.
"""

from dataclasses import dataclass

from annotation.text.storable import key_name, text_problem, value_problems

from .records import RowError

PROMPT_COLUMNS = frozenset({"prompt", "messages", "caption", "initial_reason_steps"})
RESPONSE_COLUMNS = frozenset({"chosen", "rejected", "responses"})


@dataclass(frozen=True)
class FieldLimits:
    """Characters one field may hold (every string under it, keys included; other values count one)."""

    prompt_chars: int = 200_000
    """A prompt: ``prompt``, ``messages``, ``caption``, ``initial_reason_steps``."""
    response_chars: int = 200_000
    """One response: ``chosen``, ``rejected``, or one entry of ``responses``."""
    field_chars: int = 20_000
    """Any other column (metadata such as ``id`` or ``answer``, image paths)."""
    max_depth: int = 32
    """Lists and objects nested in one column (conversational content parts need about four)."""

    def of(self, column: str) -> int:
        if column in PROMPT_COLUMNS:
            return self.prompt_chars
        if column in RESPONSE_COLUMNS:
            return self.response_chars
        return self.field_chars


def screen_record(record: dict, limits: FieldLimits) -> None:
    """Raise RowError listing every unstorable string, over-deep nesting and over-long field."""
    problems: list[tuple[str, str]] = []
    for key, value in record.items():
        column = key_name(key)
        if isinstance(key, str) and (problem := text_problem(key)) is not None:
            problems.append((column, f"the column name {problem}"))
        for unit, unit_value in _units(column, value):
            size, found = value_problems(unit_value, unit, max_depth=limits.max_depth)
            problems += found
            if size > limits.of(column):
                problems.append((unit, f"holds {size:,} characters, over the limit of {limits.of(column):,}"))
    if problems:
        raise RowError(problems=problems)


def _units(column: str, value):
    """The pieces a limit applies to: each entry of a responses list, else the whole column."""
    if column == "responses" and isinstance(value, list):
        return [(f"{column}[{index}]", entry) for index, entry in enumerate(value)]
    return [(column, value)]
