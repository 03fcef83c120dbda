"""Image-pair items built from image bytes a model sampled: the way generated images enter a project.

Generation jobs (``training/services/image_generation.py``) sample; this module stores each image as a
content-addressed Asset exactly as an import does (``assets.asset_create_from_bytes``: Pillow-verified,
held to the import limits, one file per distinct sha256), and creates one item per caption holding its K
images as candidates and one task per pair of them: every pair, as pairwise text generation does
(``candidates.candidates_add``), so each comparison is its own Pick-a-Pic row in an export.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from django.db import transaction

from ..importers.fields import content_hash
from ..models import Candidate, Item, Project, Task, TaskType
from .assets import asset_create_from_bytes
from .progress import progress_tasks_added


@dataclass(frozen=True)
class GeneratedImages:
    """One caption and the images sampled for it (at least two), with each image's provenance."""

    caption: str
    images: Sequence[bytes]
    """Encoded image files (PNG, JPEG, …), in candidate order."""
    provenance: Sequence[dict]
    """One dict per image, stored on its candidate (``kind`` defaults to ``model``)."""
    metadata: dict = field(default_factory=dict)
    """Stored on the item."""


def _item_hash(caption: str, shas: list[str]) -> str:
    """The import's content hash of an image-pair row (``importers.records.RowIn.content``)."""
    candidates = [
        {"text": "", "messages": None, "image": sha, "steps": None, "sentences": None} for sha in shas
    ]
    return content_hash({"prompt": caption, "messages": None, "images": [], "candidates": candidates})


def image_pair_items_add(
    *,
    project: Project,
    groups: Sequence[GeneratedImages],
    source: str,
    before_commit: Callable[[dict], None] | None = None,
) -> dict:
    """Create one item per group (its images as candidates, a task per pair) in one transaction; a group
    whose item is already in the project (same caption and images) is skipped.  ``before_commit(counts)``
    runs last inside the transaction: if it raises, nothing is kept.  Raises ValueError for bytes that are
    not an image."""
    if project.task_type != TaskType.IMAGE_PAIR:
        raise ValueError(f"image pairs go into image-pair projects, not {project.get_task_type_display()}")
    counts = {"items": 0, "candidates": 0, "tasks": 0, "duplicates": 0}
    with transaction.atomic():
        for group in groups:
            if len(group.images) < 2 or len(group.images) != len(group.provenance):
                raise ValueError("each caption needs two or more images, and one provenance per image")
            assets = [asset_create_from_bytes(data=data) for data in group.images]
            digest = _item_hash(group.caption, [asset.sha256 for asset in assets])
            if project.items.filter(content_hash=digest).exists():
                counts["duplicates"] += 1
                continue
            n_candidates, n_tasks = _item_create(project, group, assets, digest, source[:300])
            counts["items"] += 1
            counts["candidates"] += n_candidates
            counts["tasks"] += n_tasks
        progress_tasks_added(project_id=project.pk, count=counts["tasks"])
        if before_commit is not None:
            before_commit(counts)
    return counts


def _item_create(project, group: GeneratedImages, assets, digest: str, source: str) -> tuple[int, int]:
    item = Item.objects.create(
        project=project, prompt=group.caption, metadata=group.metadata, source=source, content_hash=digest
    )
    candidates = Candidate.objects.bulk_create(
        Candidate(item=item, position=i, asset=asset, provenance={"kind": "model", **provenance})
        for i, (asset, provenance) in enumerate(zip(assets, group.provenance, strict=True))
    )
    pairs = list(combinations([c.pk for c in candidates], 2))
    Task.objects.bulk_create(Task(project=project, item=item, candidate_ids=list(pair)) for pair in pairs)
    return len(candidates), len(pairs)
