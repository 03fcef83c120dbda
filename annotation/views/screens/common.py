"""Pieces every annotation screen shares: prompt and candidate rendering, form parsing.

Model and prompt text pass through ``model_text_to_safe_html`` only; candidates are labelled by
letters in the order shown, never by provenance.
"""

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.urls import reverse

from ...models import Asset, Candidate, Choice
from ...rendering import model_text_to_safe_html
from ...text import value_problems
from ...text.messages import content_text  # noqa: F401 (re-exported to the screens)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SIDES = {"left": 0, "right": 1}
MISSING = "*(This response is no longer available: skip the task.)*"


def letter(index: int) -> str:
    """A, B, … Z, then 27, 28, …: how a candidate is named on screen (never by provenance)."""
    return LETTERS[index] if index < len(LETTERS) else str(index + 1)


def turns_html(messages) -> list[dict]:
    """Conversation turns as role-labelled, sanitised HTML."""
    turns = []
    for message in messages or []:
        message = message if isinstance(message, dict) else {"content": message}
        role = str(message.get("role") or "message")
        turns.append({"role": role, "html": model_text_to_safe_html(content_text(message.get("content")))})
    return turns


def prompt_context(item) -> dict:
    return {
        "prompt_turns": turns_html(item.messages) if item.messages else [],
        "prompt_html": "" if item.messages else model_text_to_safe_html(item.prompt),
    }


def pair_candidate(candidate: Candidate | None, *, index: int) -> dict:
    """A candidate as the pair partials show it: side, letter, key and sanitised body."""
    if candidate is None:  # deleted since the task was built
        candidate = Candidate(text=MISSING)
    return {
        "side": "left" if index == 0 else "right",
        "label": "AB"[index],
        "key": str(index + 1),
        "turns": turns_html(candidate.messages) if candidate.messages else [],
        "html": "" if candidate.messages else model_text_to_safe_html(candidate.text),
        "steps": [model_text_to_safe_html(str(step)) for step in candidate.steps or []],
        "image": asset_image(candidate.asset) if candidate.asset_id else None,
    }


def shown_candidates(assignment) -> list[Candidate | None]:
    by_id = Candidate.objects.select_related("asset").in_bulk(assignment.shown_order)
    return [by_id.get(cid) for cid in assignment.shown_order]


def asset_image(asset: Asset) -> dict:
    """An image as served by the membership-checked asset view (never a MEDIA path)."""
    return {
        "url": reverse("asset-file", args=[asset.sha256]),
        "width": asset.width,
        "height": asset.height,
    }


MAX_JSON_DEPTH = 8
"""The screens' JSON fields are lists of labels or groups: anything deeper is not theirs."""


def _screen_json(raw: str) -> Any:
    """``json.loads`` that refuses (ValueError) what the screens never write: nesting thousands deep
    (Python's parser raises RecursionError) or deeper than theirs, text the database cannot store."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if value_problems(value, "", max_depth=MAX_JSON_DEPTH)[1]:
        raise ValueError("not the screen's JSON")
    return value


def json_field(raw: str | None, *, field: str, what: str) -> Any:
    """A JSON form field written by the screen's script; a clear field error when it is not JSON."""
    if raw in (None, ""):
        return None
    try:
        return _screen_json(raw)
    except (TypeError, ValueError):
        raise ValidationError(
            {field: f"The {what} could not be read; reload the page and try again."}
        ) from None


def side_to_choice(side: str, *, shown_order: list[int], candidate_ids: list[int]) -> str:
    """``left``/``right`` → ``a``/``b`` through the order shown; ``tie``/``both_bad`` pass through."""
    if side in (Choice.TIE, Choice.BOTH_BAD):
        return side
    if side not in SIDES:
        raise ValidationError({"choice": "Choose A (left), B (right), tie or both bad."})
    return Choice.A if shown_order[SIDES[side]] == candidate_ids[0] else Choice.B


def json_or_none(raw: str | None) -> Any:
    """What the page sent, for re-rendering after an error: None when it is not JSON."""
    try:
        return _screen_json(raw) if raw else None
    except (TypeError, ValueError):
        return None
