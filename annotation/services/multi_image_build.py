"""Build multi-image items (MIA-DPO) from a project's single-image items into a multi_image project.

For each single-image source item and each augmentation kind, a new Item: the rewritten question, its
images as ItemImage rows (the original assets for a sequence; a new content-addressed collage or
picture-in-picture asset otherwise), copies of the source's candidates, its tasks (by candidate
position) and its imported judgments, so a source chosen/rejected pair stays a chosen/rejected pair.
Distractor images are drawn, seeded, from the other single-image items of the source project.
"""

import hashlib
import json
import random

from django.core.exceptions import ValidationError
from django.db import transaction
from PIL import Image

from annotation.builders.multi_image import KINDS, augment, png_bytes

from ..models import Candidate, Item, ItemImage, Judgment, JudgmentSource, Project, Task, TaskType
from .assets import asset_create_from_bytes
from .progress import progress_tasks_added

MAX_ITEMS = 500


def _single_image_items(project: Project) -> list[Item]:
    items = project.items.prefetch_related("images__asset", "candidates", "tasks__judgments").order_by("id")
    return [item for item in items if len(item.images.all()) == 1]


def _open(asset) -> Image.Image:
    with asset.file.open("rb") as handle:
        image = Image.open(handle)
        image.load()
    return image


def _content_hash(payload: dict) -> str:
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def multi_image_items_build(
    *, source: Project, target: Project, kinds=KINDS, seed: int = 0, limit: int = 50
) -> list[Item]:
    """Create the augmented items in ``target`` (a multi_image project); returns the new items."""
    if target.task_type != TaskType.MULTI_IMAGE:
        raise ValidationError("Built items go into a multi-image project.")
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise ValidationError({"kinds": f"Choose augmentations among {', '.join(KINDS)}."})
    if not 1 <= limit <= MAX_ITEMS:
        raise ValidationError({"limit": f"limit must be from 1 to {MAX_ITEMS}, not {limit}."})
    pool = _single_image_items(source)
    if len(pool) < 2:
        raise ValidationError("The source project needs at least two items with exactly one image each.")
    assets = {item.pk: item.images.all()[0].asset for item in pool}
    rng = random.Random(seed)
    created = []
    for item in pool[:limit]:
        for kind in kinds:
            others = [other.pk for other in pool if other.pk != item.pk]
            distractor_ids = rng.sample(others, min(len(others), 8))
            built = _build_one(item, kind, distractor_ids, assets, rng.randrange(2**31), target)
            if built is not None:
                created.append(built)
    return created


def _build_one(item: Item, kind: str, distractor_ids, assets, seed: int, target: Project) -> Item | None:
    question = item.prompt or _last_user_text(item.messages)
    inputs = [item.pk, *distractor_ids]
    try:
        built = augment(
            kind, _open(assets[item.pk]), [_open(assets[i]) for i in distractor_ids], question, seed=seed
        )
    except ValueError:
        return None  # too few distractors for this kind
    if kind == "sequence":
        image_assets = [assets[inputs[i]] for i in built.sources]
    else:
        image_assets = [asset_create_from_bytes(data=png_bytes(image)) for image in built.images]
    meta = {
        "kind": kind,
        "source_item": item.pk,
        "target": built.target,
        "seed": seed,
        "inputs": [inputs[i] for i in built.sources],
    }
    content_hash = _content_hash({"prompt": built.question, "images": [a.sha256 for a in image_assets]})
    if target.items.filter(content_hash=content_hash).exists():
        return None
    with transaction.atomic():
        new = Item.objects.create(
            project=target,
            prompt=built.question,
            messages=_rewrite_messages(item.messages, built.question),
            metadata={**(item.metadata or {}), "mia_dpo": meta},
            source=f"mia-dpo:{kind}:{item.pk}",
            split=item.split,
            content_hash=content_hash,
        )
        ItemImage.objects.bulk_create(
            ItemImage(item=new, asset=asset, position=i) for i, asset in enumerate(image_assets)
        )
        _copy_candidates_and_tasks(item, new, target)
    return new


def _last_user_text(messages) -> str:
    users = [m.get("content", "") for m in messages or [] if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def _rewrite_messages(messages, question: str):
    if not messages:
        return None
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            message["content"] = question
            break
    return out


def _copy_candidates_and_tasks(item: Item, new: Item, target: Project) -> None:
    by_old = {}
    for c in item.candidates.all():
        by_old[c.pk] = Candidate.objects.create(
            item=new,
            position=c.position,
            text=c.text,
            messages=c.messages,
            asset=c.asset,
            steps=c.steps,
            sentences=c.sentences,
            provenance={**c.provenance, "copied_from": c.pk},
        ).pk
    for task in item.tasks.all():
        if not all(c in by_old for c in task.candidate_ids):
            continue
        copy = Task.objects.create(
            project=target, item=new, candidate_ids=[by_old[c] for c in task.candidate_ids]
        )
        progress_tasks_added(project_id=target.pk, count=1)
        for judgment in task.judgments.all():
            if judgment.source == JudgmentSource.IMPORTED:
                Judgment.objects.create(
                    task=copy,
                    source=JudgmentSource.IMPORTED,
                    choice=judgment.choice,
                    strength=judgment.strength,
                    label_score=judgment.label_score,
                )
