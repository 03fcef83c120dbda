"""Step-wise reasoning screen (Step-DPO, PRM800K style).

One candidate with several steps: label each correct / neutral / wrong, stopping at the first wrong
one, optionally writing a corrected step. Two candidates that are single next steps (imported Step-DPO
rows, the prefix in ``Item.metadata.initial_reason_steps``): the prefix and a pairwise choice.
"""

from ...rendering import model_text_to_safe_html
from ...services.judgment_payloads import STEP_LABELS
from ...services.judgments import judgment_submit_steps
from .common import MISSING, json_field, json_or_none, pair_candidate, shown_candidates

TEMPLATE = "annotation/_steps_task.html"
PAIR_TEMPLATE = "annotation/_steps_pair.html"


def is_pair(assignment) -> bool:
    return len(assignment.task.candidate_ids) >= 2


def _prefix_steps(metadata) -> list[str]:
    prefix = (metadata or {}).get("initial_reason_steps") or ""
    if isinstance(prefix, list):
        return [model_text_to_safe_html(str(step)) for step in prefix if str(step).strip()]
    return [model_text_to_safe_html(part) for part in str(prefix).split("\n") if part.strip()]


def pair_context(assignment, *, values) -> dict:
    candidates = shown_candidates(assignment)
    return {
        # A next step is shown as its text, not as a one-item numbered list.
        "candidates": [{**pair_candidate(c, index=i), "steps": []} for i, c in enumerate(candidates)],
        "prefix_steps": _prefix_steps(assignment.task.item.metadata),
    }


def _labels_from(values) -> list[str]:
    labels = json_or_none(values.get("step_labels"))
    return [label if label in STEP_LABELS else "" for label in labels] if isinstance(labels, list) else []


def context(assignment, *, values) -> dict:
    candidate = shown_candidates(assignment)[0]
    texts = (candidate.steps or [candidate.text]) if candidate is not None else [MISSING]
    labels = _labels_from(values)
    steps = [
        {
            "n": i + 1,
            "html": model_text_to_safe_html(str(text)),
            "label": labels[i] if i < len(labels) else "",
        }
        for i, text in enumerate(texts)
    ]
    return {"steps": steps, "corrected_step": values.get("corrected_step", "")}


def submit(*, assignment, annotator, post, time_spent_ms):
    labels = json_field(post.get("step_labels"), field="step_labels", what="step labels")
    return judgment_submit_steps(
        assignment=assignment,
        annotator=annotator,
        step_labels=labels,
        corrected_step=post.get("corrected_step", ""),
        rationale=post.get("rationale", ""),
        time_spent_ms=time_spent_ms,
    )
