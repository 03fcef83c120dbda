"""Export a frozen DatasetVersion as TRL preference JSONL (a .zip with images/ for image projects) or Parquet.

Files load unchanged with ``datasets.load_dataset("json" | "parquet", data_files=...)``.
"""

import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..models import Asset, DatasetVersion, TaskType
from .versions import version_rows

FORMATS = ("jsonl", "parquet")
SPLITS = ("all", "train", "test")
IMAGE_TYPES = {TaskType.IMAGE_PAIR, TaskType.MULTI_IMAGE}
PARQUET_BATCH = 2000
IMAGE_NAME = re.compile(r"^images/([0-9a-f]{64})\.[A-Za-z0-9]{1,10}$")

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SPAN = pa.struct([("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("label", pa.string())])
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
COLUMN_TYPES = {
    "initial_reason_steps": pa.string(),
    "answer": pa.string(),
    "rank_gap": pa.float64(),
    "rating_gap": pa.float64(),
    "strength": pa.float64(),
    "chosen_sentences": pa.list_(SPAN),
    "rejected_sentences": pa.list_(SPAN),
    "caption": pa.string(),
    "jpg_0": pa.binary(),
    "jpg_1": pa.binary(),
    "label_0": pa.float64(),
    "images": pa.list_(HF_IMAGE),
    "split": pa.string(),
}


COLUMN_ORDER = (
    "prompt",
    "chosen",
    "rejected",
    "initial_reason_steps",
    "answer",
    "images",
    "rank_gap",
    "rating_gap",
    "strength",
    "chosen_sentences",
    "rejected_sentences",
    "caption",
    "jpg_0",
    "jpg_1",
    "label_0",
)
RANK = {name: i for i, name in enumerate(COLUMN_ORDER)}


def ordered(row: dict) -> dict:
    """Columns in a fixed order and messages as {role, content, …}: PostgreSQL jsonb reorders keys."""
    out = {}
    for key in sorted(row, key=lambda k: (RANK.get(k, len(RANK)), k)):
        value = row[key]
        if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
            value = [{"role": m.get("role"), "content": m.get("content"), **m} for m in value]
        out[key] = value
    return out


class ExportError(ValueError):
    """A bad export request (unknown format or split)."""


@dataclass(frozen=True)
class ExportResult:
    filename: str
    content_type: str
    rows: int


def export_check(*, fmt: str, split: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    if split not in SPLITS:
        raise ExportError(f"split must be one of {', '.join(SPLITS)}, not {split!r}.")


def project_slug(project) -> str:
    """The project's name as a file-name stem (letters, digits and dashes)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", project.name).strip("-").lower() or "project"


def export_filename(*, version: DatasetVersion, fmt: str, split: str) -> tuple[str, str]:
    """``(file name, content type)`` of an export; JSONL of an image project is a zip."""
    stem = f"{project_slug(version.project)}-v{version.number}-{split}"
    if fmt == "parquet":
        return f"{stem}.parquet", "application/vnd.apache.parquet"
    if version.project.task_type in IMAGE_TYPES:
        return f"{stem}.zip", "application/zip"
    return f"{stem}.jsonl", "application/jsonl"


def jsonl_lines(rows: Iterable[tuple[str, dict]], *, with_split: bool) -> Iterator[str]:
    """One JSON object per line (UTF-8, not ASCII-escaped); ``split`` added when exporting all."""
    for split, row in rows:
        row = ordered(row)
        yield json.dumps({**row, "split": split} if with_split else row, ensure_ascii=False) + "\n"


def export_write(*, version: DatasetVersion, fmt: str, split: str, out) -> ExportResult:
    """Write the export to the binary, seekable file object ``out``."""
    export_check(fmt=fmt, split=split)
    filename, content_type = export_filename(version=version, fmt=fmt, split=split)
    rows = version_rows(version=version, split=split)
    if fmt == "parquet":
        count = _write_parquet(version, rows, out, with_split=split == "all")
    elif filename.endswith(".zip"):
        count = _write_zip(rows, out, with_split=split == "all")
    else:
        count = 0
        for line in jsonl_lines(rows, with_split=split == "all"):
            out.write(line.encode())
            count += 1
    return ExportResult(filename=filename, content_type=content_type, rows=count)


def _asset_files(names: set[str]) -> dict[str, Asset]:
    shas = {match.group(1): name for name in names if (match := IMAGE_NAME.match(name))}
    return {shas[a.sha256]: a for a in Asset.objects.filter(sha256__in=list(shas))}


def _read_asset(asset: Asset) -> bytes:
    with asset.file.open("rb") as handle:
        return handle.read()


def _write_zip(rows, out, *, with_split: bool) -> int:
    count, names = 0, set()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("data.jsonl", "w") as data:
            for line in jsonl_lines(_collect_names(rows, names), with_split=with_split):
                data.write(line.encode())
                count += 1
        for name, asset in sorted(_asset_files(names).items()):
            archive.writestr(name, _read_asset(asset), compress_type=zipfile.ZIP_STORED)
    return count


def _collect_names(rows, names: set[str]):
    for split, row in rows:
        names.update(_image_names(row))
        yield split, row


def _image_names(row: dict) -> list[str]:
    found = [row[key] for key in ("jpg_0", "jpg_1") if isinstance(row.get(key), str)]
    return found + [name for name in row.get("images") or [] if isinstance(name, str)]


OPTIONAL_COLUMNS = ("strength",)
"""Columns only some rows of a version have (a judged strength; imported votes have none): a Parquet
export takes one whenever any row of the version has it, null in the others."""


def parquet_schema(
    first_row: dict, *, conversational: bool, with_split: bool, optional: tuple[str, ...] = ()
) -> pa.Schema:
    text = pa.list_(MESSAGE) if conversational else pa.string()
    present = [name for name in first_row if name != "split"]
    present += [name for name in optional if name not in present]
    present.sort(key=lambda k: (RANK.get(k, len(RANK)), k))
    columns = present + (["split"] if with_split else [])
    return pa.schema(
        [(name, text if name in ("prompt", "chosen", "rejected") else COLUMN_TYPES[name]) for name in columns]
    )


def _write_parquet(version, rows, out, *, with_split: bool) -> int:
    writer, count, batch = None, 0, []
    for split, row in rows:
        batch.append({**ordered(row), "split": split} if with_split else ordered(row))
        if len(batch) >= PARQUET_BATCH:
            writer = _flush(version, batch, out, writer, with_split)
            count, batch = count + len(batch), []
    if batch or writer is None:
        writer = _flush(version, batch, out, writer, with_split)
        count += len(batch)
    writer.close()
    return count


def _flush(version, batch: list[dict], out, writer, with_split: bool):
    if writer is None:
        first = batch[0] if batch else {"prompt": "", "chosen": "", "rejected": ""}
        optional = tuple(c for c in OPTIONAL_COLUMNS if version.examples.filter(row__has_key=c).exists())
        schema = parquet_schema(
            first, conversational=version.conversational, with_split=with_split, optional=optional
        )
        writer = pq.ParquetWriter(out, schema)
    _embed_images(batch)
    writer.write_table(pa.Table.from_pylist(batch, schema=writer.schema))
    return writer


def _embed_images(batch: list[dict]) -> None:
    """Replace image names by their bytes: jpg_0/jpg_1 as binary, images as HF Image structs."""
    names = {name for row in batch for name in _image_names(row)}
    if not names:
        return
    blobs = {name: _read_asset(asset) for name, asset in _asset_files(names).items()}
    for row in batch:
        for key in ("jpg_0", "jpg_1"):
            if key in row:
                row[key] = blobs.get(row[key])
        if "images" in row:
            row["images"] = [{"bytes": blobs.get(n), "path": n.rsplit("/", 1)[-1]} for n in row["images"]]


def export_bytes(*, version: DatasetVersion, fmt: str, split: str = "all") -> tuple[ExportResult, bytes]:
    """Small exports in memory (tests, the API's small responses)."""
    buffer = io.BytesIO()
    result = export_write(version=version, fmt=fmt, split=split, out=buffer)
    return result, buffer.getvalue()
