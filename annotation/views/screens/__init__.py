"""Dispatch of the annotation screens by project task type (and, for step-wise, by task shape).

Screens: ``pair`` (pairwise text, handled in views/annotate.py), ``rank``, ``steps``, ``steps_pair``,
``facts``, ``images`` (multi-image prompt + pair) and ``imgpair``. Each non-pair screen has a
context builder and, unless it reuses the pair form, a submit adapter that calls a typed service.
"""

from ...models import TaskType
from . import facts, images, ranking, steps

TEMPLATES = {
    "rank": ranking.TEMPLATE,
    "steps": steps.TEMPLATE,
    "steps_pair": steps.PAIR_TEMPLATE,
    "facts": facts.TEMPLATE,
    "images": images.IMAGES_TEMPLATE,
    "imgpair": images.PAIR_TEMPLATE,
}
CONTEXTS = {
    "rank": ranking.context,
    "steps": steps.context,
    "steps_pair": steps.pair_context,
    "facts": facts.context,
    "images": images.images_context,
    "imgpair": images.imgpair_context,
}
SUBMITS = {  # screens absent here post the pair form (views/annotate.py)
    "rank": ranking.submit,
    "steps": steps.submit,
    "facts": facts.submit,
    "imgpair": images.imgpair_submit,
}
# Per project type: the screen's stylesheets, scripts and keyboard-help partial.
PAGE_ASSETS = {
    TaskType.RANKING: (["css/annotate_rank.css"], ["js/annotate_rank.js"], "annotation/_rank_keys.html"),
    TaskType.STEPWISE: (
        ["css/annotate_labels.css"],
        ["js/annotate_labels.js"],
        "annotation/_steps_keys.html",
    ),
    TaskType.FACTUALITY: (
        ["css/annotate_labels.css"],
        ["js/annotate_labels.js"],
        "annotation/_facts_keys.html",
    ),
    TaskType.MULTI_IMAGE: (
        ["css/annotate_images.css"],
        ["js/annotate_images.js"],
        "annotation/_images_keys.html",
    ),
    TaskType.IMAGE_PAIR: (
        ["css/annotate_images.css"],
        ["js/annotate_images.js"],
        "annotation/_imgpair_keys.html",
    ),
}


def screen_for(*, task_type: str, assignment) -> str:
    if task_type == TaskType.RANKING:
        return "rank"
    if task_type == TaskType.STEPWISE:
        return "steps_pair" if steps.is_pair(assignment) else "steps"
    if task_type == TaskType.FACTUALITY:
        return "facts"
    if task_type == TaskType.MULTI_IMAGE:
        return "images"
    if task_type == TaskType.IMAGE_PAIR:
        return "imgpair"
    return "pair"


def screen_context(screen: str, assignment, *, values) -> dict:
    """``screen``, its template and its task context (pair screens add it in views/annotate.py)."""
    context = {"screen": screen, "screen_template": TEMPLATES.get(screen, "")}
    if screen in CONTEXTS:
        context.update(CONTEXTS[screen](assignment, values=values))
    return context


def page_assets(task_type: str) -> dict:
    css, js, keys = PAGE_ASSETS.get(task_type, ([], [], ""))
    return {"screen_css": css, "screen_js": js, "screen_keys": keys}
