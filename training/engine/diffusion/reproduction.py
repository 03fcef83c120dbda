"""The Diffusion-DPO reproduction on the embedded digits model: pairs whose winner has more ink.

``write_ink_pairs`` samples the model itself (on-policy, as a judged round of the studio would): for each
digit, images from consecutive seeds are paired, and the image with the higher mean ink (``digits.ink``)
wins — a visible property a person judging the pairs could apply.  ``ink_report`` measures a model on
fixed captions and seeds: its mean ink, and how often the digit classifier reads the captioned digit.
After Diffusion-DPO on such pairs the trained model's samples carry more ink than the base's for the same
captions and seeds, while still being read as the right digit (``bench/diffusion_dpo_reproduction.py``
prints the numbers; a seeded test asserts the direction).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from training.engine.diffusion.digits import caption_for, classify_digits, ink
from training.engine.diffusion.models import DiffusionComponents
from training.engine.diffusion.sample import png_bytes, sample_images, to_pil

DIGITS = tuple(range(10))


def _samples(components, digits: Sequence[int], seeds: Sequence[int], *, steps: int, guidance: float):
    captions = [caption_for(d) for d in digits for _ in seeds]
    all_seeds = [s for _ in digits for s in seeds]
    images = sample_images(
        components, seeds=all_seeds, captions=captions, steps=steps, guidance_scale=guidance, batch_size=64
    )
    return captions, images


def write_ink_pairs(
    components: DiffusionComponents,
    path: Path,
    *,
    pairs_per_digit: int = 4,
    held_out_per_digit: int = 1,
    seed: int = 1000,
    steps: int = 20,
    guidance: float = 3.0,
) -> Path:
    """An image-pair export zip (``diffusion/data.py`` layout) of on-policy pairs: per digit,
    ``pairs_per_digit`` training and ``held_out_per_digit`` held-out pairs, each two samples of seeds
    ``seed + 2k`` and ``seed + 2k + 1``, the image with more ink the winner."""
    per_digit = pairs_per_digit + held_out_per_digit
    seeds = list(range(seed, seed + 2 * per_digit))
    captions, images = _samples(components, DIGITS, seeds, steps=steps, guidance=guidance)
    amounts = ink(images)
    pictures = to_pil(images)
    rows, files = [], {}
    for d_index in range(len(DIGITS)):
        for k in range(per_digit):
            a, b = d_index * len(seeds) + 2 * k, d_index * len(seeds) + 2 * k + 1
            names = []
            for i in (a, b):
                data = png_bytes(pictures[i])
                name = f"images/{hashlib.sha256(data).hexdigest()}.png"
                files[name] = data
                names.append(name)
            label = 1.0 if amounts[a] > amounts[b] else 0.0
            split = "test" if k >= pairs_per_digit else "train"
            rows.append(
                {
                    "caption": captions[a],
                    "jpg_0": names[0],
                    "jpg_1": names[1],
                    "label_0": label,
                    "split": split,
                }
            )
    path = Path(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        for name, data in files.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    return path


@torch.no_grad()
def ink_report(
    components: DiffusionComponents,
    *,
    seeds: Sequence[int] = tuple(range(5000, 5008)),
    steps: int = 20,
    guidance: float = 3.0,
) -> dict[str, float]:
    """``{"ink": mean ink of the samples, "accuracy": share classified as the captioned digit}`` over
    every digit × ``seeds`` (the same images for the same model, whatever else ran before)."""
    was_training = components.unet.training
    components.unet.eval()
    try:
        _, images = _samples(components, DIGITS, seeds, steps=steps, guidance=guidance)
    finally:
        components.unet.train(was_training)
    labels = torch.tensor([d for d in DIGITS for _ in seeds])
    predicted = torch.as_tensor(classify_digits(images))
    return {"ink": float(ink(images).mean()), "accuracy": float((predicted == labels).float().mean())}


INK_RUN = {
    "batch_size": 8,
    "learning_rate": 1e-3,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "lora_r": 8,
    "lora_alpha": 8.0,
    "epochs": 100,
    "max_steps": 40,
    "eval_steps": 20,
    "sample_count": 10,
    "sample_captions": tuple(caption_for(d) for d in DIGITS),
}
"""The reproduction's Diffusion-DPO settings (everything else the recipe's defaults: β 5000, sigmoid)."""
