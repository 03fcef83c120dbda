"""Small validators shared by the row parsers: each returns the clean value or raises RowError."""

import hashlib
import json
import math

from .readers import type_name
from .records import RowError

ROLES = {"system", "user", "assistant", "tool", "developer"}
SPLITS = {"train", "test"}
MAX_RESPONSES = 64
_STRUCTURED_CSV_COLUMNS = {"prompt", "chosen", "rejected", "responses", "images", "messages"}


def require(record: dict, names: list[str]) -> None:
    """All missing (or null) fields at once, so a row reports each of them."""
    missing = [(name, "is missing") for name in names if record.get(name) is None]
    if missing:
        raise RowError(problems=missing)


def text(value, field: str) -> str:
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type_name(value)}")
    if not value.strip():
        raise RowError(field, "is an empty string")
    return value


def optional_text(record: dict, field: str) -> str | None:
    value = record.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return text(value, field)


def messages(value, field: str) -> list[dict]:
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of messages ({{role, content}}), got {type_name(value)}")
    if not value:
        raise RowError(field, "is an empty list of messages")
    return [_message(message, f"{field}[{index}]") for index, message in enumerate(value)]


def _message(message, field: str) -> dict:
    if not isinstance(message, dict):
        raise RowError(field, f"expected a message object {{role, content}}, got {type_name(message)}")
    role = message.get("role")
    if role is None:
        raise RowError(f"{field}.role", "is missing")
    if not isinstance(role, str) or role not in ROLES:
        raise RowError(f"{field}.role", f"must be one of {', '.join(sorted(ROLES))}, got {role!r}")
    content = message.get("content")
    if content is None:
        raise RowError(f"{field}.content", "is missing")
    if isinstance(content, list):
        if not all(isinstance(part, dict) for part in content):
            raise RowError(f"{field}.content", "a content list must hold objects like {type, text}")
        return {"role": role, "content": content}
    return {"role": role, "content": text(content, f"{field}.content")}


def message_text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part.get("text"), str))


def joined_text(turns: list[dict]) -> str:
    return "\n\n".join(message_text(turn) for turn in turns)


def last_user_text(turns: list[dict]) -> str:
    for turn in reversed(turns):
        if turn["role"] == "user":
            return message_text(turn)
    return message_text(turns[-1])


def items_list(value, field: str, *, minimum: int, maximum: int = MAX_RESPONSES) -> list:
    if not isinstance(value, list):
        raise RowError(field, f"expected a list, got {type_name(value)}")
    if not minimum <= len(value) <= maximum:
        raise RowError(field, f"has {len(value)} entries; expected {minimum} to {maximum}")
    return value


def split_of(record: dict) -> str:
    value = record.get("split")
    if value is None or value == "":
        return ""
    if value not in SPLITS:
        raise RowError("split", f"must be 'train' or 'test', got {value!r}")
    return value


def metadata_of(record: dict, used: set[str]) -> dict:
    """Scalar columns the format does not use (``id`` and the like) become item metadata."""
    metadata = {}
    for key, value in record.items():
        if key in used or key == "split" or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, str | int | float | bool):
            metadata[key] = value
        elif not isinstance(value, list | dict | bytes | bytearray | memoryview):
            metadata[key] = str(value)  # dates and other Arrow scalars
    return metadata


def number(value, field: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RowError(field, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RowError(field, f"expected a number, got {type_name(value)}")
    return float(value)


def decode_csv_record(record: dict) -> dict:
    """CSV cells are strings: structured columns may hold JSON lists (messages, responses, images)."""
    decoded = {}
    for key, value in record.items():
        if key in _STRUCTURED_CSV_COLUMNS and value.lstrip().startswith("["):
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, a 5000-digit number, nested too deep
                parsed = value
            decoded[key] = parsed if isinstance(parsed, list) else value
        else:
            decoded[key] = value
    return decoded


def content_hash(content: dict) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
