"""Phase one of an import: read every row, validate and normalize it, and collect every problem."""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain

from .context import ParseContext
from .detect import Format, check_task_type, detect_format
from .factuality import parse_factuality
from .fields import content_hash, decode_csv_record
from .hh import parse_hh
from .images import ImageStager
from .multi_image import parse_multi_image
from .pickapic import parse_pickapic
from .readers import open_records
from .records import FileFormatError, Issue, RowError, RowIn
from .screening import FieldLimits, screen_record
from .sources import DataSource
from .stepwise import parse_stepwise
from .trl import parse_pair, parse_responses

PARSERS = {
    "trl": parse_pair,
    "responses": parse_responses,
    "hh": parse_hh,
    "stepwise": parse_stepwise,
    "pickapic": parse_pickapic,
    "multi_image": parse_multi_image,
    "factuality": parse_factuality,
}
MAX_ISSUES = 1000
PROGRESS_EVERY = 500
Progress = Callable[[int, int], None]


@dataclass
class Validation:
    fmt: Format
    description: str
    total: int
    rows: list[RowIn] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass
class Limits:
    max_image_bytes: int
    max_image_pixels: int
    max_issues: int = MAX_ISSUES
    fields: FieldLimits = field(default_factory=FieldLimits)


def validate_source(
    source: DataSource,
    *,
    task_type: str,
    project_name: str,
    limits: Limits,
    existing: Mapping[str, int] | None = None,
    forced_format: str | None = None,
    progress: Progress | None = None,
    max_rows: int | None = None,
) -> Validation:
    """Every row of ``source`` as a RowIn, or the list of every problem (line, field, reason).

    ``existing`` maps content hashes of the project's items to their ids (duplicates are errors);
    ``max_rows`` stops early (the preview). Raises FileFormatError when the file cannot be read at all.
    """
    stream = open_records(source.data_path, source.kind)
    records = _decoded(stream.records, csv=source.kind == "csv")
    first, records = _peek_record(records)
    fmt = detect_format(first, task_type=task_type, forced=forced_format)
    check_task_type(fmt, task_type=task_type, project_name=project_name)
    stager = ImageStager(
        source.files, source.work_dir, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels
    )
    result = Validation(fmt, fmt.describe(source.label), stream.total)
    ctx = ParseContext(fmt=fmt, task_type=task_type, stager=stager)
    _collect(records, ctx, result, existing or {}, limits, progress, max_rows)
    return result


def _decoded(records: Iterator, *, csv: bool) -> Iterator[tuple[int, dict | RowError]]:
    for line, record in records:
        yield line, decode_csv_record(record) if csv and isinstance(record, dict) else record


def _peek_record(records: Iterator) -> tuple[dict, Iterator]:
    """The first readable record (for detection) and an iterator that still yields everything."""
    skipped = []
    for line, record in records:
        if isinstance(record, dict):
            return record, chain(skipped, [(line, record)], records)
        skipped.append((line, record))
    if skipped:
        line, error = skipped[0]
        raise FileFormatError(f"No readable row in the file; line {line}: {error}")
    raise FileFormatError("The file holds no rows.")


def _collect(records, ctx, result: Validation, existing, limits: Limits, progress, max_rows) -> None:
    parse, max_issues = PARSERS[ctx.fmt.name], limits.max_issues
    seen: dict[str, int] = {}
    done = 0
    for line, record in records:
        try:
            if isinstance(record, RowError):
                raise record
            screen_record(record, limits.fields)
            row = parse(record, line, ctx)
            row.content_hash = content_hash(row.content())
            _check_duplicate(row, seen, existing)
            seen[row.content_hash] = line
            result.rows.append(row)
        except RowError as error:
            result.issues.extend(Issue(line, name, reason) for name, reason in error.problems)
        done += 1
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done, result.total)
        if len(result.issues) >= max_issues:
            result.truncated = True
            del result.issues[max_issues:]
            break
        if max_rows is not None and done >= max_rows:
            break
    if progress is not None:
        progress(done, result.total)


def _check_duplicate(row: RowIn, seen: dict[str, int], existing: Mapping[str, int]) -> None:
    if row.content_hash in seen:
        raise RowError("(row)", f"duplicate of line {seen[row.content_hash]}")
    if row.content_hash in existing:
        raise RowError("(row)", f"duplicate of item #{existing[row.content_hash]} already in the project")
