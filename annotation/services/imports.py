"""Importing preference files: validate every row first, then write everything in one transaction.

Storage follows docs/data-mapping.md: one Item per row, Candidates in position order, Tasks whose
``candidate_ids`` follow that order, and an imported Judgment when the file already holds the preference.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from ..importers import FieldLimits, FileFormatError, Issue, Limits, open_source, validate_source
from ..importers.images import thumbnail_data_uri
from ..models import Item, Project
from .import_write import rows_write

PREVIEW_ROWS = 5
Progress = Callable[[int, int], None]

__all__ = ["FileFormatError", "ImportOutcome", "preferences_import", "preferences_preview", "rows_write"]


@dataclass
class ImportOutcome:
    """What an import did: the detected format, and counts or the list of problems."""

    description: str
    format_name: str
    format_code: str
    total: int
    issues: list[Issue] = field(default_factory=list)
    truncated: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def report(self) -> dict:
        report = {"format": self.format_name, "format_label": self.description, "rows_total": self.total}
        if self.ok:
            return {**report, "counts": self.counts}
        errors = [issue.as_dict() for issue in self.issues]
        return {**report, "errors": errors, "truncated": self.truncated}


def import_limits() -> Limits:
    return Limits(
        max_image_bytes=settings.IMPORT_MAX_IMAGE_BYTES,
        max_image_pixels=settings.IMPORT_MAX_IMAGE_PIXELS,
        fields=FieldLimits(
            prompt_chars=settings.IMPORT_MAX_PROMPT_CHARS,
            response_chars=settings.IMPORT_MAX_RESPONSE_CHARS,
            field_chars=settings.IMPORT_MAX_FIELD_CHARS,
        ),
    )


def existing_hashes(*, project: Project) -> dict[str, int]:
    return dict(Item.objects.filter(project=project).values_list("content_hash", "id"))


def preferences_import(
    *,
    project: Project,
    path: Path,
    forced_format: str | None = None,
    images_from_dir: bool = False,
    source_name: str | None = None,
    progress: Progress | None = None,
    write_progress: Progress | None = None,
    before_commit: Callable[[ImportOutcome], None] | None = None,
) -> ImportOutcome:
    """Import every row of ``path`` into ``project``, or nothing and the list of every bad row.

    ``progress(done, total)`` follows validation; ``write_progress(done, total)`` the write (it starts
    with done=0); ``before_commit(outcome)`` runs inside the write's transaction, last, with the counts in
    (whatever it writes commits with the rows; if it raises, nothing is kept).  Raises FileFormatError
    when the file cannot be read or does not fit the project.
    """
    with open_source(path, images_from_dir=images_from_dir, max_data_bytes=settings.UPLOAD_MAX_BYTES) as src:
        validation = validate_source(
            src,
            task_type=project.task_type,
            project_name=project.name,
            limits=import_limits(),
            existing=existing_hashes(project=project),
            forced_format=forced_format,
            progress=progress,
        )
        outcome = ImportOutcome(
            validation.description, validation.fmt.name, validation.fmt.code, validation.total
        )
        if not validation.ok:
            outcome.issues, outcome.truncated = validation.issues, validation.truncated
            return outcome

        def written(counts: dict) -> None:
            outcome.counts = counts
            if before_commit is not None:
                before_commit(outcome)

        outcome.counts = rows_write(
            project=project,
            rows=validation.rows,
            source=source_name or path.name,
            progress=write_progress,
            before_commit=written,
        )
    return outcome


def preferences_preview(*, project: Project, path: Path, rows: int = PREVIEW_ROWS) -> dict:
    """The detected format and the first rows, normalized (for the page shown before confirming)."""
    with open_source(path, max_data_bytes=settings.UPLOAD_MAX_BYTES) as src:
        validation = validate_source(
            src,
            task_type=project.task_type,
            project_name=project.name,
            limits=import_limits(),
            existing=existing_hashes(project=project),
            max_rows=rows,
        )
        preview = [_with_thumbnails(row) for row in validation.rows]  # while the images are staged
    return {
        "format": validation.fmt.name,
        "format_code": validation.fmt.code,
        "format_label": validation.description,
        "rows_total": validation.total,
        "preview": preview,
        "preview_errors": [issue.as_dict() for issue in validation.issues],
    }


def _with_thumbnails(row) -> dict:
    views = row.thumbnails(thumbnail_data_uri)
    for view in views["candidate_views"]:
        view["text"] = _clipped(view["text"])
    return {**_clipped(row.preview()), **views}


def _clipped(value, limit: int = 2000):
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, list):
        return [_clipped(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _clipped(v, limit) for k, v in value.items()}
    return value
