"""Images referenced by rows: bytes, a Hugging Face ``{bytes, path}`` struct, or a relative path.

Every image is checked with Pillow (``verify()`` and then reopened for its size), held to the byte
and pixel limits, and copied to a staging folder under its sha256 until the import is written.
"""

import base64
import hashlib
import re
import warnings
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

from PIL import Image

from .records import RowError, StagedImage

ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError
)  # fmt: skip
"""What reading a damaged zip member raises: a failed CRC, a corrupt deflate stream, an unknown
compression method, an encrypted member (RuntimeError), a bad header."""
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


def safe_relative_path(ref: str, field: str) -> str:
    """A path relative to the data file, or a RowError for absolute paths and ``..``."""
    path = ref.strip().replace("\\", "/")
    if not path:
        raise RowError(field, "is an empty image path")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise RowError(field, f"absolute path {ref!r} is not allowed: give a path relative to the data file")
    parts = path.split("/")
    if ".." in parts:
        raise RowError(field, f"path {ref!r} points outside the upload ('..' is not allowed)")
    return "/".join(part for part in parts if part not in ("", "."))


class NoImageFiles:
    """A plain uploaded file: images must be inline bytes."""

    def read(self, ref: str, field: str, max_bytes: int) -> bytes:
        safe_relative_path(ref, field)
        raise RowError(
            field, f"is a file path ({ref!r}), but image paths need a .zip upload holding the images"
        )


class ZipImageFiles:
    def __init__(self, archive: zipfile.ZipFile, base: str):
        self.archive, self.base = archive, base

    def read(self, ref: str, field: str, max_bytes: int) -> bytes:
        relative = safe_relative_path(ref, field)
        name = f"{self.base}/{relative}" if self.base else relative
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise RowError(field, f"image {ref!r} is not in the zip (looked for {name!r})") from None
        if info.file_size > max_bytes:
            raise RowError(field, f"image is {info.file_size} bytes, over the limit of {max_bytes} bytes")
        try:
            return self.archive.read(info)
        except ZIP_ERRORS as exc:
            raise RowError(field, f"image {ref!r} cannot be read from the zip: {exc}") from None


class DirImageFiles:
    """Images next to a data file on disk (the management command)."""

    def __init__(self, base: Path):
        self.base = base.resolve()

    def read(self, ref: str, field: str, max_bytes: int) -> bytes:
        path = (self.base / safe_relative_path(ref, field)).resolve()
        if not path.is_relative_to(self.base):
            raise RowError(field, f"path {ref!r} points outside the data file's folder")
        if not path.is_file():
            raise RowError(field, f"image file {ref!r} does not exist")
        if path.stat().st_size > max_bytes:
            raise RowError(
                field, f"image is {path.stat().st_size} bytes, over the limit of {max_bytes} bytes"
            )
        return path.read_bytes()


def verify_image(data: bytes, field: str, *, max_bytes: int, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an image Pillow can verify, within the limits; else a RowError."""
    if len(data) > max_bytes:
        raise RowError(field, f"image is {len(data)} bytes, over the limit of {max_bytes} bytes")
    if not data:
        raise RowError(field, "image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as image:
                width, height = image.size
                _check_pixels(width, height, field, max_pixels)
                image.verify()
            with Image.open(BytesIO(data)) as image:
                image_format = image.format or ""
    except RowError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RowError(field, f"image has too many pixels (limit {max_pixels})") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise RowError(field, f"is not an image Pillow can verify ({type(exc).__name__}: {exc})") from None
    if image_format not in EXTENSIONS:
        raise RowError(
            field, f"image format {image_format or 'unknown'} is not accepted ({', '.join(EXTENSIONS)})"
        )
    return image_format, width, height


def _check_pixels(width: int, height: int, field: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RowError(
            field,
            f"image is {width}×{height} = {width * height} pixels, over the limit of {max_pixels} pixels",
        )


class ImageStager:
    """Turns a row's image value into a verified ``StagedImage`` (deduplicated by sha256)."""

    def __init__(self, files, staging_dir: Path, *, max_bytes: int, max_pixels: int):
        self.files, self.staging_dir = files, staging_dir
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._by_sha: dict[str, StagedImage] = {}

    def stage(self, value, field: str) -> StagedImage:
        data = self._bytes_of(value, field)
        sha = hashlib.sha256(data).hexdigest()
        if sha in self._by_sha:
            return self._by_sha[sha]
        image_format, width, height = verify_image(
            data, field, max_bytes=self.max_bytes, max_pixels=self.max_pixels
        )
        path = self.staging_dir / sha
        path.write_bytes(data)
        staged = StagedImage(sha, image_format, EXTENSIONS[image_format], width, height, len(data), path)
        self._by_sha[sha] = staged
        return staged

    def _bytes_of(self, value, field: str) -> bytes:
        if isinstance(value, dict) and ("bytes" in value or "path" in value):
            if value.get("bytes") is not None:
                return self._bytes_of(value["bytes"], f"{field}.bytes")
            return self._bytes_of(value.get("path"), f"{field}.path")
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            return self.files.read(value, field, self.max_bytes)
        if value is None:
            raise RowError(field, "is missing (null); expected image bytes or a path inside the zip")
        raise RowError(
            field,
            f"expected image bytes, a {{bytes, path}} object or a relative path, got {type(value).__name__}",
        )


THUMBNAIL_PIXELS = 160


def thumbnail_data_uri(image: StagedImage, *, size: int = THUMBNAIL_PIXELS) -> str:
    """A small JPEG of a staged (verified) image as a ``data:`` URI, for the preview page before the import
    writes the image anywhere it is served from; the page's CSP allows ``data:`` images only."""
    with Image.open(image.staged_path) as opened:
        opened.thumbnail((size, size))
        thumb = opened.convert("RGB")
    buffer = BytesIO()
    thumb.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
