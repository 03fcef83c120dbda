"""Image-pair rows (Pick-a-Pic columns) → ordered pairs and pixel tensors at the model's resolution.

An image-pair DatasetVersion exports (``annotation/services/exports.py``, JSONL format) as a zip:

* ``data.jsonl`` — one row a line: ``{"caption": str, "jpg_0": "images/<sha256>.<ext>",
  "jpg_1": "images/<sha256>.<ext>", "label_0": 1.0 | 0.0 | 0.5, "split": "train" | "test"}``
  (``label_0`` 1 means ``jpg_0`` won, 0 that ``jpg_1`` won, 0.5 a tie);
* ``images/<sha256>.<ext>`` — each image once, stored uncompressed, named by its content hash.

``open_image_export`` reads such a zip member by member (nothing is extracted; an image is read when it is
encoded), or the same layout unpacked in a folder (``data.jsonl`` beside ``images/``, or a ``.jsonl``
file whose image names are relative to its folder).  Ties are dropped by default and counted in
``PairReport.dropped``, as ``lm/data.py`` counts its dropped rows.

Images are decoded with Pillow (not torchvision), converted to RGB (or to one grey channel for a
pixel-space model with ``in_channels`` 1), resized so the shorter side is the resolution (bilinear,
antialiased) and center-cropped to a square: ``[C, R, R]`` float tensors in [-1, 1], the
``Normalize([0.5], [0.5])`` range the diffusers training scripts feed the VAE.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ZIP_MAGIC = b"PK\x03\x04"
DATA_NAME = "data.jsonl"
IMAGE_COLUMNS = ("jpg_0", "jpg_1")


class ImageDataError(ValueError):
    """A row or image of an image-pair export the engine cannot use; the message names the line."""


@dataclass(frozen=True)
class ImagePair:
    """One preference pair: the names of its winner and loser images inside the export."""

    caption: str
    winner: str
    loser: str
    line: int
    """1-based line of the row in ``data.jsonl``, for error messages."""
    split: str = "train"


@dataclass
class PairReport:
    """What reading kept and what it dropped, by reason (``tie``)."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)


class ImageExport:
    """An image-pair export opened for reading: its rows and, on demand, one image's bytes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self._root, self._data = self.path, self.path / DATA_NAME
        elif _is_zip(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self._root = self._data = None
        else:
            self._root, self._data = self.path.parent, self.path
        self.label = f"{self.path.name}:{DATA_NAME}" if self._zip else str(self._data)

    def lines(self) -> list[tuple[int, dict]]:
        """``(line number, row)`` of every non-blank line; a line that is not a JSON object is an error."""
        if self._zip is not None:
            if DATA_NAME not in self._zip.namelist():
                raise ImageDataError(f"{self.path.name}: no {DATA_NAME} in the archive")
            text = self._zip.read(DATA_NAME).decode("utf-8")
        elif self._data.is_file():
            text = self._data.read_text(encoding="utf-8")
        else:
            raise ImageDataError(f"{self.path}: no {DATA_NAME} (expected {DATA_NAME} beside images/)")
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ImageDataError(f"{self.label} line {number}: not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ImageDataError(f"{self.label} line {number}: not a JSON object")
            rows.append((number, row))
        return rows

    def read(self, name: str, *, line: int) -> bytes:
        """The bytes of image ``name``; ImageDataError naming ``line`` when the export lacks it."""
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return self._file(name).read_bytes()
        except (KeyError, OSError) as exc:
            raise ImageDataError(f"{self.label} line {line}: image {name!r} is not in the export") from exc

    def _file(self, name: str) -> Path:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise KeyError(name)
        return self._root / relative

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> ImageExport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def open_image_export(path: str | Path) -> ImageExport:
    """Open an export zip, a folder holding ``data.jsonl`` and ``images/``, or a ``.jsonl`` file."""
    return ImageExport(path)


def read_pairs(
    export: ImageExport, *, split: str | None = None, keep_ties: bool = False
) -> tuple[list[ImagePair], PairReport]:
    """The rows of ``split`` (all with None; rows without a split count as train) as winner/loser pairs,
    ordered by ``label_0`` with ``pick_a_pic_order``; ties are dropped unless ``keep_ties``."""
    report, pairs = PairReport(), []
    for line, row in export.lines():
        row_split = row.get("split") or "train"
        if split is not None and row_split != split:
            continue
        missing = [key for key in ("caption", *IMAGE_COLUMNS, "label_0") if row.get(key) is None]
        if missing:
            raise ImageDataError(f"{export.label} line {line}: missing {', '.join(missing)}")
        try:
            order = pick_a_pic_order(row["label_0"], keep_ties=keep_ties)
        except (TypeError, ValueError) as exc:
            raise ImageDataError(f"{export.label} line {line}: {exc}") from exc
        if order is None:
            report.dropped["tie"] += 1
            continue
        images = [row[key] for key in IMAGE_COLUMNS]
        pairs.append(ImagePair(str(row["caption"]), images[order[0]], images[order[1]], line, row_split))
    report.kept = len(pairs)
    return pairs, report


def pick_a_pic_order(label_0: float, keep_ties: bool = False) -> tuple[int, int] | None:
    """``(winner, loser)`` image indices from Pick-a-Pic's ``label_0``: 1 → ``(0, 1)`` (``jpg_0`` wins),
    0 → ``(1, 0)``, 0.5 → ``None`` (a tie, dropped) or ``(0, 1)`` with ``keep_ties``."""
    value = float(label_0)
    if value == 1.0:
        return (0, 1)
    if value == 0.0:
        return (1, 0)
    if value == 0.5:
        return (0, 1) if keep_ties else None
    raise ValueError(f"label_0 must be 0, 0.5 or 1, got {label_0!r}")


def decode_image(data: bytes, *, resolution: int, channels: int = 3) -> torch.Tensor:
    """Image bytes → ``[channels, resolution, resolution]`` float32 in [-1, 1]: shorter side resized
    to ``resolution``, then center-cropped.  Raises Pillow's errors for bytes that are no image."""
    if channels not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, not {channels}")
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB" if channels == 3 else "L")
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.uint8).reshape(resolution, resolution, channels)
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).float()
    return pixels / 127.5 - 1.0


def load_images(
    export: ImageExport, named: Sequence[tuple[str, int]], *, resolution: int, channels: int = 3
) -> torch.Tensor:
    """``[N, channels, R, R]`` pixels of the ``(image name, line)`` pairs, in order; an image the
    export lacks or Pillow cannot decode is an ImageDataError naming its line."""
    out = []
    for name, line in named:
        data = export.read(name, line=line)
        try:
            out.append(decode_image(data, resolution=resolution, channels=channels))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ImageDataError(
                f"{export.label} line {line}: image {name!r} cannot be decoded ({exc})"
            ) from exc
    return torch.stack(out)
