"""Sentence factuality screen (Mask-DPO, ANAH style): label each sentence of one response.

Sentences come from ``Candidate.sentences``, else the text split into sentences (the same split the
service checks the label count against). Sentences are shown as escaped plain text.
"""

from ...services.judgment_payloads import SENTENCE_LABELS, candidate_sentences
from ...services.judgments import judgment_submit_sentences
from .common import MISSING, json_field, json_or_none, shown_candidates

TEMPLATE = "annotation/_facts_task.html"


def _labels_from(values) -> list:
    labels = json_or_none(values.get("sentence_labels"))
    return labels if isinstance(labels, list) else []


def context(assignment, *, values) -> dict:
    candidate = shown_candidates(assignment)[0]
    texts = (
        candidate_sentences(sentences=candidate.sentences, text=candidate.text)
        if candidate is not None
        else [MISSING]
    )
    labels = _labels_from(values)
    sentences = []
    for i, text in enumerate(texts):
        entry = labels[i] if i < len(labels) and isinstance(labels[i], dict) else {}
        label = entry.get("label") if entry.get("label") in SENTENCE_LABELS else ""
        sentences.append(
            {"n": i + 1, "text": text, "label": label, "correction": entry.get("correction") or ""}
        )
    return {"sentences": sentences}


def submit(*, assignment, annotator, post, time_spent_ms):
    labels = json_field(post.get("sentence_labels"), field="sentence_labels", what="sentence labels")
    return judgment_submit_sentences(
        assignment=assignment,
        annotator=annotator,
        sentence_labels=labels,
        rationale=post.get("rationale", ""),
        time_spent_ms=time_spent_ms,
    )
