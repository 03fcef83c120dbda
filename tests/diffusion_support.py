"""Helpers for the diffusion job tests: an image-pair project version of real judged assets, tiny settings."""

import io
import random

from PIL import Image

from annotation.models import Candidate, Item, Judgment, JudgmentSource, Task, TaskType
from annotation.services.assets import asset_create_from_bytes
from annotation.services.versions import FreezeRule, dataset_version_freeze
from training.engine.diffusion.tiny import SYNTHETIC_CAPTIONS, save_tiny_pixel
from training.models import Location, ModelEntry, ModelKind


def picture(rng: random.Random, brightness: float, size: int = 16) -> bytes:
    """A seeded noisy PNG whose mean brightness is about ``brightness`` (0…1)."""
    values = bytes(max(0, min(255, int(255 * brightness + rng.gauss(0, 30)))) for _ in range(size * size * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), values).save(out, format="PNG")
    return out.getvalue()


def image_pair_version(project, *, train: int = 8, test: int = 4, seed: int = 0):
    """Make ``project`` an image-pair project of ``train + test`` captioned pairs whose brighter image was
    chosen (imported judgments, on either side), and freeze it: the last ``test`` items are held out."""
    project.task_type = TaskType.IMAGE_PAIR
    project.save(update_fields=["task_type"])
    rng = random.Random(seed)
    for i in range(train + test):
        bright, dark = picture(rng, rng.uniform(0.6, 0.9)), picture(rng, rng.uniform(0.1, 0.4))
        bright_first = rng.random() < 0.5
        images = (bright, dark) if bright_first else (dark, bright)
        item = Item.objects.create(
            project=project,
            prompt=SYNTHETIC_CAPTIONS[i % len(SYNTHETIC_CAPTIONS)],
            split="test" if i >= train else "train",
            content_hash=f"image-pair-{seed}-{i}",
        )
        candidates = [
            Candidate.objects.create(item=item, position=k, asset=asset_create_from_bytes(data=data))
            for k, data in enumerate(images)
        ]
        task = Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in candidates])
        Judgment.objects.create(
            task=task, source=JudgmentSource.IMPORTED, choice="a" if bright_first else "b"
        )
    return dataset_version_freeze(project=project, rule=FreezeRule())


def tiny_diffusion_entry(folder, *, name: str = "tiny-pixel-diffusion") -> ModelEntry:
    """A tiny caption-conditioned pixel-space diffusers folder at ``folder``, registered as a local model."""
    save_tiny_pixel(folder)
    return ModelEntry.objects.create(
        name=name, location=Location.LOCAL, path=str(folder), kind=ModelKind.DIFFUSION
    )


def diffusion_params(**overrides) -> dict:
    """Diffusion-DPO settings that run a tiny model in a second or two: samples at steps 0, 2 and 4."""
    params = {
        "method": "diffusion_dpo",
        "batch_size": 4,
        "epochs": 10,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "eval_steps": 2,
        "save_steps": 2,
        "sample_count": 2,
        "sample_steps": 3,
    }
    params.update(overrides)
    return params
