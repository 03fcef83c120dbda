"""Content-addressed image assets: MEDIA_ROOT/assets/ab/cd/<sha256>.<ext>, one row per distinct image."""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from ..importers.images import EXTENSIONS, verify_image
from ..importers.records import RowError, StagedImage
from ..models import Asset

_IN_CHUNK = 900


def asset_name(*, sha256: str, extension: str) -> str:
    """The storage name of an asset (relative to MEDIA_ROOT)."""
    return f"assets/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def _place(source: Path, name: str) -> None:
    target = Path(settings.MEDIA_ROOT) / name
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    os.close(handle)
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)  # atomic: a reader never sees half a file


def assets_by_sha(shas: Iterable[str]) -> dict[str, Asset]:
    shas = list(shas)
    found: dict[str, Asset] = {}
    for start in range(0, len(shas), _IN_CHUNK):
        found.update((a.sha256, a) for a in Asset.objects.filter(sha256__in=shas[start : start + _IN_CHUNK]))
    return found


def assets_store_staged(*, images: Iterable[StagedImage]) -> dict[str, Asset]:
    """Asset rows (by sha256) for verified, staged images; new files are copied under MEDIA_ROOT."""
    staged = {image.sha256: image for image in images}
    if not staged:
        return {}
    existing = assets_by_sha(staged)
    new = []
    for sha, image in staged.items():
        name = asset_name(sha256=sha, extension=image.extension)
        _place(image.staged_path, name)
        if sha not in existing:
            new.append(
                Asset(
                    sha256=sha,
                    file=name,
                    format=image.format,
                    width=image.width,
                    height=image.height,
                    size_bytes=image.size_bytes,
                )
            )
    Asset.objects.bulk_create(new, ignore_conflicts=True)
    return assets_by_sha(staged)


def asset_create_from_bytes(*, data: bytes) -> Asset:
    """Verify image bytes with Pillow (limits from settings) and store them once; raises ValueError."""
    try:
        image_format, width, height = verify_image(
            data,
            "image",
            max_bytes=settings.IMPORT_MAX_IMAGE_BYTES,
            max_pixels=settings.IMPORT_MAX_IMAGE_PIXELS,
        )
    except RowError as error:
        raise ValueError(str(error)) from None
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / sha
        path.write_bytes(data)
        staged = StagedImage(sha, image_format, EXTENSIONS[image_format], width, height, len(data), path)
        return assets_store_staged(images=[staged])[sha]
