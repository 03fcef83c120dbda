"""Stream raw records out of JSONL, JSON, CSV and Parquet files, with 1-based line numbers.

A record is a dict; a line that cannot be read is a ``RowError`` in its place, so the caller can
report it and carry on with the next line.
"""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .records import FileFormatError, RowError

FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
KIND_LABELS = {"jsonl": "JSONL", "json": "JSON", "csv": "CSV", "parquet": "Parquet"}
LINE = "(line)"
TOO_DEEP = "nested too deeply (lists or objects about a thousand levels deep)"

csv.field_size_limit(2**31 - 1)  # long responses are normal; the upload size limit bounds them


@dataclass
class RecordStream:
    total: int
    records: Iterator[tuple[int, dict | RowError]]


def type_name(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", bytes: "bytes"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def kind_for(path: Path) -> str:
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise FileFormatError(
            f"Unsupported file type {path.suffix or '(none)'!r}: use .jsonl, .json, .csv or .parquet."
        )
    return kind


def open_records(path: Path, kind: str) -> RecordStream:
    if kind == "jsonl":
        return RecordStream(_count_jsonl(path), _jsonl(path))
    if kind == "json":
        return _json(path)
    if kind == "csv":
        return RecordStream(sum(1 for _ in _csv(path, count_only=True)), _csv(path))
    if kind == "parquet":
        return _parquet(path)
    raise FileFormatError(f"Unknown file kind {kind!r}.")


def _count_jsonl(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for raw in fh if raw.strip())


def _jsonl(path: Path) -> Iterator[tuple[int, dict | RowError]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, RowError(LINE, f"invalid UTF-8 (byte {exc.start + 1} of the line)")
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, RowError(LINE, f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                yield number, RowError(LINE, TOO_DEEP)
                continue
            except ValueError as exc:  # a number of over 4300 digits
                yield number, RowError(LINE, f"not valid JSON: {exc}")
                continue
            if not isinstance(record, dict):
                yield number, RowError(LINE, f"expected a JSON object, got {type_name(record)}")
                continue
            yield number, record


def _json(path: Path) -> RecordStream:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return RecordStream(1, iter([(line, RowError(LINE, f"invalid UTF-8 (line {line} of the file)"))]))
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordStream(
            1, iter([(exc.lineno, RowError(LINE, f"not valid JSON: {exc.msg} (column {exc.colno})"))])
        )
    except RecursionError:
        raise FileFormatError(f"The JSON file cannot be read: it is {TOO_DEEP}.") from None
    except ValueError as exc:  # a number of over 4300 digits
        raise FileFormatError(f"The JSON file cannot be read: {exc}.") from None
    if not isinstance(records, list):
        raise FileFormatError(f"A .json file must hold a list of records, not {type_name(records)}.")
    return RecordStream(len(records), _json_items(records))


def _json_items(records: list) -> Iterator[tuple[int, dict | RowError]]:
    for index, record in enumerate(records, start=1):
        if isinstance(record, dict):
            yield index, record
        else:
            yield index, RowError(LINE, f"expected a JSON object, got {type_name(record)}")


def _decoded_lines(fh, bad_lines: set[int]) -> Iterator[str]:
    for number, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield raw.decode("utf-8", errors="replace")


def _csv(path: Path, *, count_only: bool = False) -> Iterator[tuple[int, dict | RowError]]:
    bad_lines: set[int] = set()
    with open(path, "rb") as fh:
        reader = csv.reader(_decoded_lines(fh, bad_lines))
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileFormatError(f"Cannot read the CSV header: {exc}") from exc
        _check_header(header)
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, RowError(LINE, f"not valid CSV: {exc}")
                return
            line, start = start, reader.line_num + 1
            if not row or count_only:
                if row:
                    yield line, {}
                continue
            yield line, _csv_record(header, row, line, reader.line_num, bad_lines)


def _check_header(header: list[str]) -> None:
    seen = set()
    for name in header:
        if not name.strip():
            raise FileFormatError("The CSV header has an empty column name.")
        if name in seen:
            raise FileFormatError(f"The CSV header names column {name!r} twice.")
        seen.add(name)


def _csv_record(header, row, first_line, last_line, bad_lines) -> dict | RowError:
    if any(number in bad_lines for number in range(first_line, last_line + 1)):
        return RowError(LINE, "invalid UTF-8")
    if len(row) != len(header):
        return RowError(LINE, f"has {len(row)} cells but the header has {len(header)} columns")
    return dict(zip(header, row, strict=True))


def _parquet(path: Path) -> RecordStream:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise FileFormatError(f"Cannot read the Parquet file: {exc}") from exc
    return RecordStream(parquet.metadata.num_rows, _parquet_rows(parquet))


def _parquet_rows(parquet) -> Iterator[tuple[int, dict | RowError]]:
    index = 0
    batches = parquet.iter_batches(batch_size=1000)
    while True:
        try:
            rows = next(batches).to_pylist()
        except StopIteration:
            return
        except Exception as exc:  # corrupt pages, undecodable strings: pyarrow raises several types
            yield index + 1, RowError(LINE, f"cannot read the Parquet rows from here on: {exc}")
            return
        for row in rows:
            index += 1
            yield index, row
