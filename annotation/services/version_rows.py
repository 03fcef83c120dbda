"""Pure functions that turn a task, its item, candidates and current votes into export rows.

Rows follow docs/data-mapping.md "Export rows". Nothing here touches the database: the freeze
service loads plain dicts and calls these. A builder returns ``(rows, drop_reason)``.
"""

import random
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from ..builders.arithmetic import join_steps
from ..text.sentences import spans_for_sentences, split_sentences
from .agreement import CATEGORIES, strict_majority

LABEL_0 = {"a": 1.0, "b": 0.0, "tie": 0.5}
FACTUAL_WORDS = {"factual", "true", "correct", "supported", "yes", "1", "ok", "right"}


@dataclass(frozen=True, slots=True)
class Vote:
    """One current judgment: a human annotator's newest, or one imported judgment."""

    choice: str = ""
    strength: int | None = None
    imported: bool = False
    ranking: list | None = None
    sentence_labels: list | None = None
    step_labels: list | None = None
    corrected_step: str = ""
    ratings: dict | None = None


def image_name(sha256: str, file_name: str) -> str:
    """The relative path of an asset inside an export: ``images/<sha256>.<ext>``."""
    ext = file_name.rsplit(".", 1)[-1].lower() if "." in file_name.rsplit("/", 1)[-1] else "bin"
    return f"images/{sha256}.{ext}"


def passes_strength(vote: Vote, min_strength: int | None) -> bool:
    """Imported votes (strength unknown) and votes without a strength pass any minimum."""
    return min_strength is None or vote.imported or vote.strength is None or vote.strength >= min_strength


def decide(choices: list[str], rule, *, keep_ties: bool = False) -> tuple[str | None, str | None]:
    """Apply the majority rule to one set of choices: ``(winner, None)`` or ``(None, drop_reason)``."""
    if not choices:
        return None, "no_votes"
    if len(choices) < rule.min_votes:
        return None, "too_few_votes"
    winner = strict_majority(choices)
    if winner is None:
        return None, "no_majority"
    if choices.count(winner) / len(choices) < rule.min_agreement:
        return None, "low_agreement"
    if winner == "tie" and (rule.drop_ties or not keep_ties):
        return None, "tie"
    if winner == "both_bad":
        return None, "both_bad"
    return winner, None


def pair_choices(votes: list[Vote], rule) -> tuple[list[str], str | None]:
    choices = [v.choice for v in votes if v.choice in CATEGORIES]
    kept = [v.choice for v in votes if v.choice in CATEGORIES and passes_strength(v, rule.min_strength)]
    if choices and not kept:
        return [], "below_min_strength"
    return kept, None


def winner_strength(votes: list[Vote], winner: str, rule) -> float | None:
    """Mean strength (1 slightly, 2 clearly, 3 much better) of the kept votes for the winner that say
    one; None when none does (imported votes)."""
    said = [v.strength for v in votes if v.choice == winner and v.strength is not None]
    said = [s for s in said if rule.min_strength is None or s >= rule.min_strength]
    return sum(said) / len(said) if said else None


def completion(candidate: dict, conversational: bool) -> Any:
    if not conversational:
        return candidate["text"]
    return candidate["messages"] or [{"role": "assistant", "content": candidate["text"]}]


def text_pair_row(item: dict, chosen: dict, rejected: dict) -> dict:
    """TRL preference row; conversational when the item has messages."""
    conversational = bool(item["messages"])
    return {
        "prompt": item["messages"] if conversational else item["prompt"],
        "chosen": completion(chosen, conversational),
        "rejected": completion(rejected, conversational),
    }


def pair_rows(task_type: str, item: dict, candidates: list[dict], votes: list[Vote], rule):
    """Rows for a two-candidate task: pairwise, HH, step-wise, multi-image and image pairs."""
    if len(candidates) != 2:
        return [], "not_a_pair"
    choices, reason = pair_choices(votes, rule)
    if reason:
        return [], reason
    winner, reason = decide(choices, rule, keep_ties=task_type == "image_pair")
    if winner is None:
        return [], reason
    first, second = candidates
    if task_type == "image_pair":
        return [
            {
                "caption": item["prompt"],
                "jpg_0": first["image"],
                "jpg_1": second["image"],
                "label_0": LABEL_0[winner],
            }
        ], None
    chosen, rejected = (first, second) if winner == "a" else (second, first)
    row = text_pair_row(item, chosen, rejected)
    if (strength := winner_strength(votes, winner, rule)) is not None:
        row["strength"] = strength
    if task_type == "stepwise":
        row["initial_reason_steps"] = str(item["metadata"].get("initial_reason_steps", ""))
        answer = item["metadata"].get("answer")
        row["answer"] = None if answer is None else str(answer)
    if task_type == "multi_image":
        row["images"] = list(item["images"])
    return [row], None


def ranking_rows(item: dict, candidates: list[dict], votes: list[Vote], rule):
    """Every (better, worse) pair the majority agrees on, with ``rank_gap`` (mean group distance) and
    ``rating_gap`` (mean rating difference where annotators rated both, else None) for curricula."""
    rankings = [_group_index(v.ranking) for v in votes if v.ranking and passes_strength(v, rule.min_strength)]
    if not rankings:
        return [], "no_votes"
    if len(rankings) < rule.min_votes:
        return [], "too_few_votes"
    rows = []
    for first, second in combinations(candidates, 2):
        gaps = [(r[first["id"]], r[second["id"]]) for r in rankings if first["id"] in r and second["id"] in r]
        choices = ["a" if x < y else "b" if x > y else "tie" for x, y in gaps]
        winner, _ = decide(choices, rule)
        if winner is None:
            continue
        chosen, rejected = (first, second) if winner == "a" else (second, first)
        agreeing = [abs(x - y) for (x, y), c in zip(gaps, choices, strict=True) if c == winner]
        gap = sum(agreeing) / len(agreeing)
        rows.append(
            {
                **text_pair_row(item, chosen, rejected),
                "rank_gap": int(gap) if gap == int(gap) else gap,
                "rating_gap": rating_gap(votes, chosen["id"], rejected["id"]),
            }
        )
    return rows, None if rows else "no_majority"


def rating_gap(votes: list[Vote], chosen_id: int, rejected_id: int) -> float | None:
    """Mean of (chosen − rejected) ratings over the votes that rated both; None when none did."""
    diffs = []
    for vote in votes:
        ratings = vote.ratings or {}
        better, worse = ratings.get(str(chosen_id)), ratings.get(str(rejected_id))
        if isinstance(better, int | float) and isinstance(worse, int | float):
            diffs.append(better - worse)
    return sum(diffs) / len(diffs) if diffs else None


def step_label_rows(item: dict, candidate: dict, votes: list[Vote], rule):
    """Step-DPO rows from labelled solutions: the majority's first wrong step is ``rejected``, each
    distinct correction of it ``chosen``, the steps before it ``initial_reason_steps``."""
    labelled = [v for v in votes if v.step_labels and passes_strength(v, rule.min_strength)]
    if not labelled:
        return [], "no_votes"
    firsts = [str(v.step_labels.index("wrong")) if "wrong" in v.step_labels else "none" for v in labelled]
    winner, reason = decide(firsts, rule)
    if winner is None:
        return [], reason
    if winner == "none":
        return [], "no_wrong_step"
    wrong = int(winner)
    steps = [str(step) for step in candidate["steps"] or [candidate["text"]]]
    fixes = {v.corrected_step.strip() for v, first in zip(labelled, firsts, strict=True) if first == winner}
    fixes.discard("")
    if not fixes or wrong >= len(steps):
        return [], "no_correction"
    answer = item["metadata"].get("answer")
    return [
        {
            "prompt": item["prompt"],
            "chosen": fix,
            "rejected": steps[wrong],
            "initial_reason_steps": join_steps(steps[:wrong]),
            "answer": None if answer is None else str(answer),
        }
        for fix in sorted(fixes)
    ], None


def _group_index(ranking: list) -> dict[int, int]:
    """``[[3], [1, 2]]`` or ``[3, 1, 2]`` → ``{3: 0, 1: 1, 2: 1}`` (a group is a tie)."""
    index = {}
    for position, group in enumerate(ranking):
        for candidate_id in group if isinstance(group, list) else [group]:
            index[int(candidate_id)] = position
    return index


def is_factual(label: Any) -> bool:
    if isinstance(label, dict):
        label = label.get("label")
    if isinstance(label, bool):
        return label
    if isinstance(label, int | float):
        return label >= 0.5
    return str(label).strip().lower() in FACTUAL_WORDS


NO_CLAIM_WORDS = {"not_claim", "no_claim", "x", "none", "n/a"}


def sentence_label(label: Any) -> str:
    """One vote on a sentence as ``factual``, ``hallucinated`` or ``no_claim`` (the engine's labels)."""
    raw = label.get("label") if isinstance(label, dict) else label
    if isinstance(raw, str) and raw.strip().lower() in NO_CLAIM_WORDS:
        return "no_claim"
    return "factual" if is_factual(raw) else "hallucinated"


def sentence_verdicts(votes: list[Vote], n_sentences: int, rule) -> tuple[list[str] | None, str | None]:
    """Per-sentence plurality label over the current votes of one response (a tie: ``no_claim``)."""
    labelled = [v.sentence_labels for v in votes if v.sentence_labels is not None]
    if not labelled:
        return None, "no_votes"
    if len(labelled) < rule.min_votes:
        return None, "too_few_votes"
    verdicts = []
    for index in range(n_sentences):
        ranked = Counter(
            sentence_label(labels[index]) for labels in labelled if index < len(labels)
        ).most_common(2)
        tied = not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1])
        verdicts.append("no_claim" if tied else ranked[0][0])
    return verdicts, None


def factuality_rows(item: dict, responses: list[tuple[dict, list[str]]]) -> list[dict]:
    """Mask-DPO's pair: the response with the highest factual share (chosen) against the lowest.

    No row when the shares are equal, the chosen has no factual sentence or the rejected no
    hallucinated one (docs/methods.md, Mask-DPO). Ties on share go to the earlier response.
    """
    if len(responses) < 2:
        return []
    ranked = sorted(enumerate(responses), key=lambda pair: (-_share(pair[1][1]), pair[0]))
    (chosen, chosen_v), (rejected, rejected_v) = ranked[0][1], ranked[-1][1]
    if (
        _share(chosen_v) == _share(rejected_v)
        or "factual" not in chosen_v
        or "hallucinated" not in rejected_v
    ):
        return []
    return [
        {
            **text_pair_row(item, chosen, rejected),
            "chosen_sentences": _spans(chosen, chosen_v),
            "rejected_sentences": _spans(rejected, rejected_v),
        }
    ]


def _share(verdicts: list[str]) -> float:
    return verdicts.count("factual") / len(verdicts) if verdicts else 0.0


def sentence_texts(candidate: dict) -> list[str]:
    """The sentences labelled on the factuality screen: the stored list, else the text's split."""
    if candidate["sentences"]:
        return [str(s) for s in candidate["sentences"]]
    return split_sentences(candidate["text"] or "") or [candidate["text"]]


def _spans(candidate: dict, verdicts: list[str]) -> list[dict]:
    """``{text, start, end, label}`` per sentence; start/end are character offsets into the response text
    (0, 0 for a stored sentence that cannot be found in it: it then masks no token)."""
    sentences = sentence_texts(candidate)
    offsets = spans_for_sentences(candidate["text"] or "", sentences)
    return [
        {"text": str(text), "start": (span or (0, 0))[0], "end": (span or (0, 0))[1], "label": verdict}
        for text, span, verdict in zip(sentences, offsets, verdicts, strict=False)
    ]


def assign_splits(item_ids, fixed: dict[int, str], *, seed: int, test_fraction: float) -> dict[int, str]:
    """Item.split when set; otherwise a seeded shuffle of the sorted item ids puts a fraction in test."""
    ids = set(item_ids)
    free = sorted(ids - set(fixed))
    random.Random(seed).shuffle(free)
    n_test = round(len(free) * test_fraction)
    splits = {item_id: "test" if i < n_test else "train" for i, item_id in enumerate(free)}
    splits.update({item_id: split for item_id, split in fixed.items() if item_id in ids})
    return splits


def make_conversational(row: dict) -> dict:
    """Turn a standard row conversational so a version's rows share one shape."""
    out = dict(row)
    if isinstance(row.get("prompt"), str):
        out["prompt"] = [{"role": "user", "content": row["prompt"]}]
    for key in ("chosen", "rejected"):
        if isinstance(row.get(key), str):
            out[key] = [{"role": "assistant", "content": row[key]}]
    return out
