"""Curation for project managers: the item browser, one item's page and the disagreement queue.

Model output is untrusted: every text here reaches the template as plain text (autoescaped), never as
HTML, and images come only from the membership-checked asset view.
"""

import json

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..access import project_member_required
from ..models import Judgment
from ..selectors_items import (
    FILTERS,
    candidates_of,
    disagreement_queue,
    item_browser,
    item_for_page,
    judgments_disagree,
    queue_votes,
)
from ..services.agreement import step_labels_of
from ..services.gold import gold_label
from .screens.common import asset_image, content_text, letter

QUERY_CHARS = 200
THUMB_PX = 160
FILTER_LABELS = {
    "all": "All",
    "judged": "Judged",
    "unjudged": "Unjudged",
    "disagreement": "Disagreement",
    "gold": "Gold",
    "skipped": "Skipped",
}


@require_GET
@project_member_required(manager=True)
def item_list(request, project_id):
    filter_name = request.GET.get("filter", "all")
    filter_name = filter_name if filter_name in FILTERS else "all"
    query = request.GET.get("q", "")[:QUERY_CHARS]
    browser = item_browser(
        project=request.project, filter_name=filter_name, query=query, page_number=request.GET.get("page")
    )
    context = {
        "project": request.project,
        "filter_name": filter_name,
        "query": query,
        "filters": [(name, FILTER_LABELS[name], browser.counts[name]) for name in FILTERS],
        "page": browser.page,
        "rows": [
            {"item": item, "snippet": _snippet(item), "disagrees": item.pk in browser.disagreeing}
            for item in browser.page.object_list
        ],
    }
    return render(request, "annotation/item_list.html", context)


@require_GET
@project_member_required(manager=True)
def item_detail(request, project_id, item_id):
    item = item_for_page(project=request.project, item_id=item_id)
    if item is None:
        raise Http404("No such item in this project.")
    candidates = list(item.candidates.all())
    names = _names(candidates)
    context = {
        "project": request.project,
        "item": item,
        "turns": _turns(item.messages),
        "images": [_thumb(image.asset) for image in item.images.all()],
        "candidates": [_candidate(c) for c in candidates],
        "tasks": [_task(task, names) for task in item.tasks.all()],
        "gold_json": json.dumps(item.gold_payload, indent=2) if item.gold_payload else "",
    }
    return render(request, "annotation/item_detail.html", context)


@require_GET
@project_member_required(manager=True)
def disagreement_list(request, project_id):
    page, tasks = disagreement_queue(project=request.project, page_number=request.GET.get("page"))
    votes = queue_votes(tasks=page.object_list)
    names = _names(candidates_of(item_ids={task.item_id for task in page.object_list}).values())
    rows = [
        {
            "task": task,
            "snippet": _snippet(task.item),
            "votes": [
                {"who": j.annotator.username, "vote": vote_text(j, task=task, names=names)}
                for j in votes.get(task.pk, [])
            ],
        }
        for task in page.object_list
    ]
    context = {
        "project": request.project,
        "page": page,
        "rows": rows,
        "n_tasks": len(tasks),
        "n_items": len(set(tasks.values())),
    }
    return render(request, "annotation/disagreement_queue.html", context)


# --- plain data for the templates ------------------------------------------------------------------


def _snippet(item) -> str:
    """The item's prompt, or its last user turn's text when it only has messages."""
    if item.prompt or not item.messages:
        return item.prompt
    turns = [t for t in item.messages if isinstance(t, dict) and t.get("role") == "user"] or item.messages
    last = turns[-1]
    return content_text(last.get("content") if isinstance(last, dict) else last)


def _turns(messages) -> list[dict]:
    turns = []
    for message in messages or []:
        message = message if isinstance(message, dict) else {"content": message}
        turns.append(
            {"role": str(message.get("role") or "message"), "text": content_text(message.get("content"))}
        )
    return turns


def _thumb(asset) -> dict:
    image = asset_image(asset)
    scale = min(1.0, THUMB_PX / max(asset.width, asset.height, 1))
    return {
        **image,
        "width": max(1, round(asset.width * scale)),
        "height": max(1, round(asset.height * scale)),
    }


def _names(candidates) -> dict[str, str]:
    """How a vote names a candidate: ``response N`` by its position in the item (keys: id as text)."""
    return {str(c.pk): f"response {c.position + 1}" for c in candidates}


def _candidate(candidate) -> dict:
    return {
        "c": candidate,
        "label": f"Response {candidate.position + 1}",
        "turns": _turns(candidate.messages),
        "steps": [str(step) for step in candidate.steps or []],
        "sentences": [str(s) for s in candidate.sentences or []],
        "image": _thumb(candidate.asset) if candidate.asset_id else None,
        "kind": str((candidate.provenance or {}).get("kind", "")),
    }


def _task(task, names: dict[str, str]) -> dict:
    judgments = list(task.judgments.all())
    replaced_by = {j.supersedes_id: j.pk for j in judgments if j.supersedes_id}
    shown = [names.get(str(c), f"candidate {c}") for c in task.candidate_ids]
    return {
        "task": task,
        "shown": [{"letter": letter(i), "name": name} for i, name in enumerate(shown)],
        "disagrees": judgments_disagree(judgments),
        "judgments": [_judgment(j, task=task, names=names, replaced_by=replaced_by) for j in judgments],
        "skips": task.skips,
    }


def _judgment(judgment: Judgment, *, task, names, replaced_by: dict[int, int]) -> dict:
    return {
        "j": judgment,
        "who": judgment.annotator.username if judgment.annotator_id else "imported",
        "vote": vote_text(judgment, task=task, names=names),
        "seconds": None if judgment.time_spent_ms is None else round(judgment.time_spent_ms / 1000, 1),
        "replaced_by": replaced_by.get(judgment.pk),
    }


def vote_text(judgment: Judgment, *, task, names: dict[str, str]) -> str:
    """A judgment's vote in words, as its task type holds it: the choice (and the response it picks),
    the ranking, the first wrong step, sentence labels, ratings, a soft label."""
    parts = []
    if judgment.choice:
        parts.append(judgment.get_choice_display())
        picked = {"a": 0, "b": 1}.get(judgment.choice)
        if picked is not None and picked < len(task.candidate_ids):
            parts[-1] += f" ({names.get(str(task.candidate_ids[picked]), 'gone')})"
    if judgment.ranking:
        groups = (g if isinstance(g, list) else [g] for g in judgment.ranking)
        parts.append(" > ".join(" = ".join(names.get(str(c), str(c)) for c in group) for group in groups))
    labels = step_labels_of(judgment.step_labels, judgment.first_wrong_step)
    if labels is not None:
        first = labels.index("wrong") + 1 if "wrong" in labels else None
        parts.append(f"first wrong step: {first}" if first else "every step correct")
    if judgment.sentence_labels:
        words = (gold_label(label) for label in judgment.sentence_labels)
        parts.append("sentences: " + ", ".join(f"{i} {word}" for i, word in enumerate(words, start=1)))
    if isinstance(judgment.ratings, dict) and judgment.ratings:
        parts.append(
            "ratings: " + ", ".join(f"{names.get(str(k), k)} {v}" for k, v in judgment.ratings.items())
        )
    if judgment.label_score is not None:
        parts.append(f"label_0 = {judgment.label_score:g}")
    return " · ".join(parts) or "—"
