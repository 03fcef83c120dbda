"""Test data for the ranking, step-wise, factuality, multi-image and image-pair screens."""

import io

from PIL import Image, ImageDraw

from annotation.models import Candidate, ItemImage, Task
from annotation.services.assets import asset_create_from_bytes
from tests.factories import CandidateFactory, ItemFactory


def ranking_task(project, *, prompt=None, texts=("Answer A", "Answer B", "Answer C")) -> Task:
    """One task with every candidate of an item, as a ranking import builds it."""
    item = ItemFactory(project=project, **({"prompt": prompt} if prompt else {}))
    cands = [CandidateFactory(item=item, position=i, text=t) for i, t in enumerate(texts)]
    return Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in cands])


def steps_task(project, *, prompt=None, steps=("Let x = 2.", "Then 2x = 4.", "So x + 1 = 5.")) -> Task:
    """One candidate solution split into steps: the step-labelling screen."""
    item = ItemFactory(project=project, **({"prompt": prompt} if prompt else {}))
    cand = CandidateFactory(item=item, position=0, text="\n".join(steps), steps=list(steps))
    return Task.objects.create(project=project, item=item, candidate_ids=[cand.pk])


def step_pair_task(
    project, *, prompt=None, prefix="Step 1: 3 apples.\nStep 2: buy 2 more.", steps=("5", "6")
):
    """An imported Step-DPO row: the prefix in metadata, two single next steps."""
    item = ItemFactory(
        project=project,
        metadata={"initial_reason_steps": prefix, "answer": "5"},
        **({"prompt": prompt} if prompt else {}),
    )
    cands = [CandidateFactory(item=item, position=i, text=s, steps=[s]) for i, s in enumerate(steps)]
    return Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in cands])


def facts_task(project, *, prompt=None, text="Paris is in France. It has 90 million people.", sentences=None):
    """One response labelled sentence by sentence (``sentences`` None: split from the text)."""
    item = ItemFactory(project=project, **({"prompt": prompt} if prompt else {}))
    cand = CandidateFactory(item=item, position=0, text=text, sentences=sentences)
    return Task.objects.create(project=project, item=item, candidate_ids=[cand.pk])


def png_bytes(color: str, *, size=(96, 64), label: str = "") -> bytes:
    image = Image.new("RGB", size, color)
    if label:
        ImageDraw.Draw(image).text((6, 6), label, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def multi_image_task(
    project, *, prompt=None, colors=("red", "green", "blue"), texts=("Answer A", "Answer B")
):
    item = ItemFactory(project=project, **({"prompt": prompt} if prompt else {}))
    for position, color in enumerate(colors):
        asset = asset_create_from_bytes(data=png_bytes(color, size=(320, 200), label=f"image {position + 1}"))
        ItemImage.objects.create(item=item, asset=asset, position=position)
    cands = [CandidateFactory(item=item, position=i, text=t) for i, t in enumerate(texts)]
    return Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in cands])


def image_pair_task(project, *, caption=None, colors=("orange", "purple")) -> Task:
    item = ItemFactory(project=project, **({"prompt": caption} if caption else {}))
    cands = []
    for position, color in enumerate(colors):
        asset = asset_create_from_bytes(data=png_bytes(color, size=(384, 384), label=color))
        cands.append(Candidate.objects.create(item=item, position=position, asset=asset))
    return Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in cands])


def facts_item(
    project, *, prompt="Tell me about Paris.", texts=("Paris is in France.", "Paris is in Spain.")
):
    """An item with several responses, one factuality task per response (as the import builds it)."""
    item = ItemFactory(project=project, prompt=prompt)
    cands = [CandidateFactory(item=item, position=i, text=t) for i, t in enumerate(texts)]
    return [Task.objects.create(project=project, item=item, candidate_ids=[c.pk]) for c in cands]
