"""MIA-DPO augmentations: turn a single-image question into a multi-image one, seeded, with Pillow.

Three kinds (docs/methods.md, MIA-DPO):

* ``sequence`` — the target among 2–5 images shown in order as Image1 … ImageN;
* ``grid`` — one collage of 2, 3, 4, 6 or 9 tiles of 448 px, each labelled "Image i";
* ``pip`` — picture-in-picture: the target at 70% size centred on another image.

Each returns the images to attach (in order), where the target is, and the question rewritten to point
at it. The same seed and inputs give the same output, byte for byte.
"""

import random
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageDraw, ImageFont

TILE = 448
SEQUENCE_SIZES = (2, 3, 4, 5)
GRID_SIZES = (2, 3, 4, 6, 9)
GRID_LAYOUT = {2: (2, 1), 3: (3, 1), 4: (2, 2), 6: (3, 2), 9: (3, 3)}  # columns, rows
PIP_SCALE = 0.7
KINDS = ("sequence", "grid", "pip")


@dataclass(frozen=True)
class Augmented:
    """A built multi-image prompt: ``images`` in order; ``target`` indexes the image or tile of the target."""

    kind: str
    images: tuple[Image.Image, ...]
    sources: tuple[int, ...]
    """For each image (sequence) or tile (grid), the index of the input image it shows; pip: (target, bg)."""
    target: int
    question: str


def _fit(image: Image.Image, size: int = TILE) -> Image.Image:
    """The image scaled to fit a size×size tile, centred on a black background."""
    image = image.convert("RGB")
    scale = size / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    tile = Image.new("RGB", (size, size))
    tile.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return tile


def _label(tile: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=28)
    _, _, right, bottom = draw.textbbox((8, 8), text, font=font)
    draw.rectangle((0, 0, right + 6, bottom + 6), fill=(255, 255, 255))
    draw.text((8, 8), text, fill=(0, 0, 0), font=font)


def _pick(rng: random.Random, n_distractors: int, sizes: tuple[int, ...], size: int | None) -> int:
    allowed = [s for s in sizes if s - 1 <= n_distractors]
    if not allowed:
        raise ValueError(f"needs at least {sizes[0] - 1} other image(s), got {n_distractors}")
    if size is not None:
        if size not in allowed:
            raise ValueError(f"size {size} is not one of {allowed}")
        return size
    return rng.choice(allowed)


def _order(rng: random.Random, n: int, n_distractors: int) -> tuple[list[int], int]:
    """Input indexes (0 = target, 1.. = distractors) in shown order, and the target's position."""
    chosen = rng.sample(range(1, n_distractors + 1), n - 1)
    target = rng.randrange(n)
    chosen.insert(target, 0)
    return chosen, target


def augment_sequence(target, distractors, question, *, seed: int, size: int | None = None) -> Augmented:
    rng = random.Random(seed)
    n = _pick(rng, len(distractors), SEQUENCE_SIZES, size)
    order, where = _order(rng, n, len(distractors))
    inputs = [target, *distractors]
    names = ", ".join(f"Image{i + 1}" for i in range(n))
    text = f"You are shown {n} images ({names}). Answer about Image{where + 1} only. {question}"
    return Augmented("sequence", tuple(inputs[i] for i in order), tuple(order), where, text)


def augment_grid(target, distractors, question, *, seed: int, size: int | None = None) -> Augmented:
    rng = random.Random(seed)
    n = _pick(rng, len(distractors), GRID_SIZES, size)
    order, where = _order(rng, n, len(distractors))
    inputs = [target, *distractors]
    columns, rows = GRID_LAYOUT[n]
    collage = Image.new("RGB", (columns * TILE, rows * TILE), (255, 255, 255))
    for tile_index, input_index in enumerate(order):
        tile = _fit(inputs[input_index])
        _label(tile, f"Image {tile_index + 1}")
        collage.paste(tile, ((tile_index % columns) * TILE, (tile_index // columns) * TILE))
    text = f'The picture is a collage of {n} images labelled "Image 1" to "Image {n}". '
    text += f'Answer about the one labelled "Image {where + 1}" only. {question}'
    return Augmented("grid", (collage,), tuple(order), where, text)


def augment_pip(target, distractors, question, *, seed: int, size: int | None = None) -> Augmented:
    rng = random.Random(seed)
    if not distractors:
        raise ValueError("needs at least 1 other image, got 0")
    background_index = rng.randrange(len(distractors)) + 1
    background = _fit(distractors[background_index - 1])
    inset = _fit(target, round(TILE * PIP_SCALE))
    offset = ((TILE - inset.width) // 2, (TILE - inset.height) // 2)
    background.paste(inset, offset)
    text = "A smaller picture is set in the centre of a larger one. "
    text += f"Answer about the smaller picture only. {question}"
    return Augmented("pip", (background,), (0, background_index), 0, text)


AUGMENT = {"sequence": augment_sequence, "grid": augment_grid, "pip": augment_pip}


def augment(kind: str, target, distractors, question, *, seed: int, size: int | None = None) -> Augmented:
    if kind not in AUGMENT:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return AUGMENT[kind](target, list(distractors), question, seed=seed, size=size)


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG bytes (no metadata), so the same build gives the same asset sha256."""
    buffer = BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
