"""Image screens: multi-image prompts (MIA-DPO) and image pairs (Diffusion-DPO, Pick-a-Pic style).

Images are served by the membership-checked asset view. Multi-image: the item's images as a
sequence, grid or picture-in-picture (``Item.metadata.layout`` or the MIA-DPO kind, toggled with
``l``) and a pairwise choice between two text answers. Image pair: the caption and two images,
left/right randomised; choices left, right, tie.
"""

from ...models import ItemImage
from ...services.judgments import judgment_submit_image_pair
from .common import asset_image, pair_candidate, shown_candidates, side_to_choice

IMAGES_TEMPLATE = "annotation/_images_task.html"
PAIR_TEMPLATE = "annotation/_imgpair_task.html"
LAYOUTS = ("sequence", "grid", "pip")


def layout_of(metadata) -> str:
    """``metadata.layout``, else the MIA-DPO builder's kind (``metadata.mia_dpo.kind``), else grid."""
    metadata = metadata if isinstance(metadata, dict) else {}
    built = metadata.get("mia_dpo") if isinstance(metadata.get("mia_dpo"), dict) else {}
    layout = str(metadata.get("layout") or built.get("kind") or "").lower()
    return layout if layout in LAYOUTS else "grid"


def images_context(assignment, *, values) -> dict:
    item = assignment.task.item
    rows = ItemImage.objects.filter(item=item).select_related("asset").order_by("position")
    return {
        "candidates": [pair_candidate(c, index=i) for i, c in enumerate(shown_candidates(assignment))],
        "images": [{**asset_image(row.asset), "n": i + 1} for i, row in enumerate(rows)],
        "layout": layout_of(item.metadata),
        "layouts": LAYOUTS,
    }


def imgpair_context(assignment, *, values) -> dict:
    return {"candidates": [pair_candidate(c, index=i) for i, c in enumerate(shown_candidates(assignment))]}


def imgpair_submit(*, assignment, annotator, post, time_spent_ms):
    choice = side_to_choice(
        post.get("choice", ""),
        shown_order=assignment.shown_order,
        candidate_ids=assignment.task.candidate_ids,
    )
    return judgment_submit_image_pair(
        assignment=assignment,
        annotator=annotator,
        choice=choice,
        rationale=post.get("rationale", ""),
        time_spent_ms=time_spent_ms,
    )
