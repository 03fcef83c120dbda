"""Ranking screen (Curry-DPO): order N candidates by drag or keys, ties allowed, optional ratings 1–5.

The page posts ``ranking`` as JSON groups of candidate ids, best first (a group is a tie), and
``rating_<id>`` radio values; the service checks the ids against the task.
"""

from ...rendering import model_text_to_safe_html
from ...services.judgments import judgment_submit_ranking
from .common import MISSING, json_field, json_or_none, letter, shown_candidates, turns_html

TEMPLATE = "annotation/_rank_task.html"


def _groups_from(values) -> list[list[int]] | None:
    """The order the annotator had before an error re-render (ignored when unreadable)."""
    groups = json_or_none(values.get("ranking"))
    try:
        return [[int(c) for c in group] for group in groups] if isinstance(groups, list) else None
    except (TypeError, ValueError):
        return None


def _card(candidate, *, index: int, cid: int, values) -> dict:
    text = candidate.text if candidate is not None else MISSING
    messages = candidate.messages if candidate is not None else None
    return {
        "id": cid,
        "letter": letter(index),
        "key": str(index + 1) if index < 9 else "",  # keys 1–9 select; later ones are dragged or moved
        "turns": turns_html(messages) if messages else [],
        "html": "" if messages else model_text_to_safe_html(text),
        "rating": str(values.get(f"rating_{cid}") or ""),
        "tied": False,
    }


def context(assignment, *, values) -> dict:
    candidates = shown_candidates(assignment)
    cards = [
        _card(c, index=i, cid=cid, values=values)
        for i, (c, cid) in enumerate(zip(candidates, assignment.shown_order, strict=True))
    ]
    groups = _groups_from(values)
    if groups:
        by_id = {card["id"]: card for card in cards}
        ordered = [(by_id.pop(cid), n > 0) for group in groups for n, cid in enumerate(group) if cid in by_id]
        for card, tied in ordered:
            card["tied"] = tied
        cards = [card for card, _ in ordered] + list(by_id.values())
    return {"cards": cards, "ratings_scale": ["1", "2", "3", "4", "5"]}


def _ratings(post, candidate_ids) -> dict[int, int]:
    ratings = {}
    for cid in candidate_ids:
        raw = post.get(f"rating_{cid}")
        if raw:
            ratings[cid] = int(raw) if raw.isdigit() else raw
    return ratings


def submit(*, assignment, annotator, post, time_spent_ms):
    ranking = json_field(post.get("ranking"), field="ranking", what="ranking")
    return judgment_submit_ranking(
        assignment=assignment,
        annotator=annotator,
        ranking=ranking,
        ratings=_ratings(post, assignment.task.candidate_ids),
        rationale=post.get("rationale", ""),
        time_spent_ms=time_spent_ms,
    )
