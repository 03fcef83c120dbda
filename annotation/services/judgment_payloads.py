"""Pure validation of the typed judgment payloads (ranking, step labels, sentence labels, image pair).

Each ``*_fields`` function returns the Judgment fields to store, or raises a ValidationError whose
keys name the form field at fault (``ranking``, ``ratings``, ``step_labels``, ``corrected_step``,
``sentence_labels``, ``choice``, ``rationale``), so a screen can show each message beside its field.
"""

from typing import Any

from django.core.exceptions import ValidationError

from ..text import text_problem
from .version_rows import sentence_texts

RATIONALE_MAX = 5000
CORRECTION_MAX = 5000
STEP_LABELS = ("correct", "neutral", "wrong")
SENTENCE_LABELS = ("factual", "hallucinated", "not_claim")
IMAGE_CHOICES = {"a": 1.0, "b": 0.0, "tie": 0.5}


def candidate_sentences(*, sentences: list | None, text: str) -> list[str]:
    """The sentences a factuality screen labels: the stored list, else the text split into sentences."""
    return sentence_texts({"sentences": sentences, "text": text or ""})


def rationale_errors(rationale: str) -> dict[str, str]:
    if len(rationale) > RATIONALE_MAX:
        return {"rationale": f"The rationale is {len(rationale)} characters; at most {RATIONALE_MAX}."}
    if problem := text_problem(rationale):
        return {"rationale": f"The rationale {problem}."}
    return {}


def _raise(errors: dict[str, str]) -> None:
    if errors:
        raise ValidationError(errors)


def _ranking_error(ranking: Any, candidate_ids: list[int]) -> str | None:
    if not isinstance(ranking, list) or not ranking:
        return "Order the responses before you submit."
    if not all(isinstance(g, list) and g and all(type(c) is int for c in g) for g in ranking):
        return "The ranking must be groups of response ids, best first."
    flat = [c for group in ranking for c in group]
    if len(flat) != len(set(flat)):
        return "A response appears twice in the ranking."
    if set(flat) != set(candidate_ids):
        return f"Rank every response of this task exactly once ({len(candidate_ids)} responses)."
    if len(ranking) == 1 and len(candidate_ids) > 1:
        return "All responses are tied: put at least one above another, or skip the task."
    return None


def _ratings_error(ratings: dict, candidate_ids: list[int]) -> str | None:
    for key, value in ratings.items():
        if key not in candidate_ids:
            return f"Rating for an unknown response {key!r}."
        if type(value) is not int or not 1 <= value <= 5:
            return f"Ratings are whole numbers from 1 to 5, not {value!r}."
    return None


def ranking_fields(*, ranking: Any, ratings: dict | None, candidate_ids: list[int], rationale: str) -> dict:
    """Groups of candidate ids best first (a group is a tie) and optional ratings {id: 1–5}."""
    ratings = ratings or {}
    errors = rationale_errors(rationale)
    if message := _ranking_error(ranking, candidate_ids):
        errors["ranking"] = message
    if message := _ratings_error(ratings, candidate_ids):
        errors["ratings"] = message
    _raise(errors)
    return {
        "ranking": [list(group) for group in ranking],
        "ratings": {str(k): v for k, v in ratings.items()} or None,
        "rationale": rationale,
    }


def _step_labels_error(labels: Any, n_steps: int) -> str | None:
    if not isinstance(labels, list) or not labels:
        return "Label the steps: c correct, n neutral, w wrong."
    bad = [label for label in labels if label not in STEP_LABELS]
    if bad:
        return f"Step labels are correct, neutral or wrong, not {str(bad[0])[:30]!r}."
    if len(labels) > n_steps:
        return f"There are {n_steps} steps but {len(labels)} labels."
    if "wrong" in labels[:-1]:
        return "Labelling stops at the first wrong step: no label may follow it."
    if labels[-1] != "wrong" and len(labels) < n_steps:
        return f"Label every step (step {len(labels) + 1} has no label yet), or mark one wrong."
    return None


def step_fields(*, step_labels: Any, corrected_step: str, n_steps: int, rationale: str) -> dict:
    """Labels up to and including the first wrong step, and an optional correction of that step."""
    corrected_step = (corrected_step or "").strip()
    errors = rationale_errors(rationale)
    if message := _step_labels_error(step_labels, n_steps):
        errors["step_labels"] = message
    wrong = step_labels[-1] == "wrong" if "step_labels" not in errors else False
    if corrected_step and not wrong and "step_labels" not in errors:
        errors["corrected_step"] = "Only a wrong step can be corrected: mark a step wrong first."
    elif len(corrected_step) > CORRECTION_MAX:
        errors["corrected_step"] = (
            f"The correction is {len(corrected_step)} characters; at most {CORRECTION_MAX}."
        )
    elif problem := text_problem(corrected_step):
        errors["corrected_step"] = f"The correction {problem}."
    _raise(errors)
    return {
        "step_labels": list(step_labels),
        "first_wrong_step": len(step_labels) - 1 if wrong else None,
        "corrected_step": corrected_step,
        "rationale": rationale,
    }


def _sentence_error(index: int, entry: Any) -> str | None:
    label = entry.get("label") if isinstance(entry, dict) else None
    if label not in SENTENCE_LABELS:
        return f"Sentence {index + 1}: mark it factual (f), hallucinated (h) or not a claim (x)."
    correction = entry.get("correction") or ""
    if not isinstance(correction, str):
        return f"Sentence {index + 1}: the correction must be text."
    if correction.strip() and label != "hallucinated":
        return f"Sentence {index + 1}: only a hallucinated sentence takes a correction."
    if len(correction) > CORRECTION_MAX:
        return (
            f"Sentence {index + 1}: the correction is {len(correction)} characters; at most {CORRECTION_MAX}."
        )
    if problem := text_problem(correction):
        return f"Sentence {index + 1}: the correction {problem}."
    return None


def sentence_fields(*, sentence_labels: Any, n_sentences: int, rationale: str) -> dict:
    """One ``{"label", "correction"?}`` per sentence, in order."""
    errors = rationale_errors(rationale)
    if not isinstance(sentence_labels, list) or len(sentence_labels) != n_sentences:
        got = len(sentence_labels) if isinstance(sentence_labels, list) else 0
        errors["sentence_labels"] = f"Label all {n_sentences} sentences ({got} labelled)."
    else:
        messages = [m for i, e in enumerate(sentence_labels) if (m := _sentence_error(i, e))]
        if messages:
            errors["sentence_labels"] = " ".join(messages[:3])
    _raise(errors)
    labels = []
    for entry in sentence_labels:
        correction = (entry.get("correction") or "").strip()
        labels.append({"label": entry["label"], **({"correction": correction} if correction else {})})
    return {"sentence_labels": labels, "rationale": rationale}


def image_pair_fields(*, choice: str, rationale: str) -> dict:
    """Pick-a-Pic vote: ``a``/``b``/``tie`` with ``label_score`` = label_0 (1, 0 or 0.5)."""
    errors = rationale_errors(rationale)
    if choice not in IMAGE_CHOICES:
        errors["choice"] = "Choose the left image (1), the right image (2) or a tie (0)."
    _raise(errors)
    return {"choice": choice, "strength": None, "label_score": IMAGE_CHOICES[choice], "rationale": rationale}
