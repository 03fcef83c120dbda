"""Open an uploaded file or zip: where the data file is, its kind, and where its images come from."""

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .images import ZIP_ERRORS, DirImageFiles, NoImageFiles, ZipImageFiles
from .readers import FILE_KINDS, KIND_LABELS, kind_for
from .records import FileFormatError

COPY_CHUNK = 1024 * 1024


@dataclass
class DataSource:
    data_path: Path
    kind: str
    in_zip: bool
    files: object
    work_dir: Path

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind] + (" in zip" if self.in_zip else "")


@contextmanager
def open_source(
    path: Path, *, images_from_dir: bool = False, max_data_bytes: int | None = None
) -> Iterator[DataSource]:
    """Yield a DataSource; a zip's data file is extracted to a temporary folder removed afterwards.

    ``images_from_dir``: a plain file may name images relative to its own folder (the command line);
    web uploads may not (their folder holds other users' uploads).
    """
    work_dir = Path(tempfile.mkdtemp(prefix="prefstudio-import-"))
    try:
        if path.suffix.lower() == ".zip":
            with _open_zip(path) as archive:
                yield _zip_source(archive, work_dir, max_data_bytes)
        else:
            files = DirImageFiles(path.parent) if images_from_dir else NoImageFiles()
            yield DataSource(path, kind_for(path), False, files, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextmanager
def _open_zip(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise FileFormatError(f"Cannot open the zip file: {exc}") from exc
    with archive:
        yield archive


def _zip_source(archive: zipfile.ZipFile, work_dir: Path, max_data_bytes: int | None) -> DataSource:
    data_files = [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and Path(info.filename).suffix.lower() in FILE_KINDS
    ]
    if not data_files:
        raise FileFormatError("The zip holds no data file (.jsonl, .json, .csv or .parquet).")
    if len(data_files) > 1:
        names = ", ".join(info.filename for info in data_files[:5])
        raise FileFormatError(f"The zip holds {len(data_files)} data files ({names}); keep exactly one.")
    info = data_files[0]
    if max_data_bytes is not None and info.file_size > max_data_bytes:
        raise FileFormatError(
            f"The data file in the zip is {info.file_size} bytes, over the limit of {max_data_bytes}."
        )
    suffix = Path(info.filename).suffix.lower()
    data_path = work_dir / f"data{suffix}"
    try:
        _extract(archive, info, data_path, max_data_bytes)
    except ZIP_ERRORS as exc:
        raise FileFormatError(f"Cannot read {info.filename!r} from the zip: {exc}") from exc
    base = info.filename.rsplit("/", 1)[0] if "/" in info.filename else ""
    return DataSource(data_path, FILE_KINDS[suffix], True, ZipImageFiles(archive, base), work_dir)


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, max_bytes: int | None) -> None:
    """Copy one member out, checking its CRC (zipfile does, at the end) and never writing past
    ``max_bytes`` whatever its header claims."""
    written = 0
    with archive.open(info) as source, open(target, "wb") as out:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            if max_bytes is not None and written > max_bytes:
                raise FileFormatError(
                    f"The data file in the zip unpacks to over {max_bytes} bytes, the upload limit."
                )
            out.write(chunk)
