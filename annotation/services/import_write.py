"""Phase two of an import: write validated rows in one transaction.

The rows go in with multi-row ``INSERT … RETURNING id`` statements built here rather than through
``bulk_create``: the ORM compiles every value of every object, which made 100,000 rows (≈500,000
inserted records) take over half a minute on SQLite; plain parameter lists cut that several times
(bench/import_throughput.py measures it). Values are adapted exactly as the fields would adapt them.
"""

import sqlite3
from collections.abc import Callable
from contextlib import contextmanager

from django.db import connection, models, transaction
from django.utils import timezone

from ..importers import RowIn
from ..models import Candidate, Item, ItemImage, Judgment, JudgmentSource, Project, Task
from .assets import assets_store_staged
from .progress import progress_tasks_added

WRITE_CHUNK = 2000
Progress = Callable[[int, int], None]


def _params_limit() -> int:
    if connection.vendor == "sqlite":
        return 32_000 if sqlite3.sqlite_version_info >= (3, 32) else 999
    return connection.features.max_query_params or 60_000


def _adapter(field: models.Field, now):
    ops = connection.ops
    if isinstance(field, models.JSONField):
        return lambda value: None if value is None else ops.adapt_json_value(value, field.encoder)
    if isinstance(field, models.DateTimeField):
        stamp = ops.adapt_datetimefield_value(now)
        return lambda value: stamp
    return None


def insert_returning_ids(model: type[models.Model], columns: list[str], rows: list[tuple]) -> list[int]:
    """Insert ``rows`` (values in ``columns`` order; ``created_at`` is filled in) and return their ids."""
    meta, now = model._meta, timezone.now()
    fields = [meta.get_field(name) for name in columns]
    extra = [f for f in meta.concrete_fields if getattr(f, "auto_now_add", False) and f.name not in columns]
    fields += extra
    if not connection.features.can_return_rows_from_bulk_insert:
        return _orm_insert(model, fields, rows)
    adapters = [_adapter(field, now) for field in fields]
    prepared = [
        tuple(
            adapt(value) if adapt else value
            for adapt, value in zip(adapters, (*row, *[None] * len(extra)), strict=True)
        )
        for row in rows
    ]
    ids = _execute_inserts(meta, fields, prepared)
    if len(ids) != len(prepared):
        raise RuntimeError(f"Inserted {len(prepared)} {meta.model_name} rows but got {len(ids)} ids back.")
    return ids


def _execute_inserts(meta, fields, prepared: list[tuple]) -> list[int]:
    """Multi-row VALUES lists; on PostgreSQL one typed array per column through UNNEST (as Django does)."""
    quote = connection.ops.quote_name
    # Identifiers come from the model's meta and are quoted; every value is a parameter.
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
    tail = f" RETURNING {quote(meta.pk.column)}"
    unnest = connection.vendor == "postgresql"
    if unnest:
        arrays = ", ".join(f"%b::{field.db_type(connection)}[]" for field in fields)
        batch, unnest_sql = 5000, f"{head}SELECT * FROM UNNEST({arrays}){tail}"  # noqa: S608
    else:
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        batch = max(1, _params_limit() // len(fields))
    ids: list[int] = []
    with _raw_cursor(unnest) as cursor:
        for start in range(0, len(prepared), batch):
            part = prepared[start : start + batch]
            if unnest:
                cursor.execute(unnest_sql, [list(column) for column in zip(*part, strict=True)])
            else:
                cursor.execute(head + "VALUES " + ", ".join([placeholder] * len(part)) + tail, _flat(part))
            ids.extend(row[0] for row in cursor.fetchall())
    return ids


def _flat(rows: list[tuple]) -> list:
    return [value for row in rows for value in row]


@contextmanager
def _raw_cursor(server_side: bool):
    """The driver's own cursor (DEBUG's per-query SQL formatting costs seconds here); on PostgreSQL a
    server-side binding cursor on the same connection and transaction, so arrays travel in binary."""
    with connection.cursor() as wrapper:
        if not server_side:
            yield wrapper.cursor
            return
        import psycopg

        with psycopg.Cursor(connection.connection) as cursor:
            yield cursor


def _orm_insert(model, fields, rows) -> list[int]:  # databases without INSERT … RETURNING
    objs = [model(**{f.attname: v for f, v in zip(fields, row, strict=False)}) for row in rows]
    return [obj.pk for obj in model.objects.bulk_create(objs)]


def rows_write(
    *,
    project: Project,
    rows: list[RowIn],
    source: str,
    progress: Progress | None = None,
    before_commit: Callable[[dict], None] | None = None,
) -> dict:
    """Write validated rows in one transaction; returns the counts of what was created.
    ``before_commit(counts)`` runs last inside the transaction: if it raises, nothing is kept."""
    counts = {"items": 0, "candidates": 0, "tasks": 0, "judgments": 0, "images": 0}
    if progress is not None:
        progress(0, len(rows))
    with transaction.atomic():
        assets = assets_store_staged(images=[image for row in rows for image in _row_images(row)])
        counts["images"] = len(assets)
        asset_ids = {sha: asset.pk for sha, asset in assets.items()}
        for start in range(0, len(rows), WRITE_CHUNK):
            chunk = rows[start : start + WRITE_CHUNK]
            for key, value in _write_chunk(project.pk, chunk, asset_ids, source[:300]).items():
                counts[key] += value
            if progress is not None:
                progress(start + len(chunk), len(rows))
        progress_tasks_added(project_id=project.pk, count=counts["tasks"])
        if before_commit is not None:
            before_commit(counts)
    return counts


def _row_images(row: RowIn):
    yield from row.images
    yield from (candidate.image for candidate in row.candidates if candidate.image is not None)


ITEM_COLUMNS = ["project", "prompt", "messages", "metadata", "source", "split", "content_hash", "is_gold"]
CANDIDATE_COLUMNS = ["item", "position", "text", "messages", "asset", "steps", "sentences", "provenance"]
TASK_COLUMNS = ["project", "item", "candidate_ids"]
JUDGMENT_COLUMNS = [
    "task",
    "source",
    "choice",
    "label_score",
    "sentence_labels",
    "corrected_step",
    "rationale",
]


def _write_chunk(
    project_id: int, rows: list[RowIn], asset_ids: dict[str, int], source: str
) -> dict[str, int]:
    item_ids = insert_returning_ids(
        Item,
        ITEM_COLUMNS,
        [
            (project_id, r.prompt, r.messages, r.metadata, source, r.split, r.content_hash, False)
            for r in rows
        ],
    )
    candidate_rows = [
        (item_id, position, c.text, c.messages, asset_ids[c.image.sha256] if c.image else None, c.steps,
         c.sentences, {"kind": "imported"})
        for item_id, row in zip(item_ids, rows, strict=True)
        for position, c in enumerate(row.candidates)
    ]  # fmt: skip
    candidate_ids = insert_returning_ids(Candidate, CANDIDATE_COLUMNS, candidate_rows)
    image_rows = [
        (item_id, asset_ids[image.sha256], position)
        for item_id, row in zip(item_ids, rows, strict=True)
        for position, image in enumerate(row.images)
    ]
    if image_rows:
        insert_returning_ids(ItemImage, ["item", "asset", "position"], image_rows)
    task_rows, judgments = _task_rows(project_id, item_ids, rows, candidate_ids)
    task_ids = insert_returning_ids(Task, TASK_COLUMNS, task_rows)
    judgment_rows = [
        (task_ids[index], JudgmentSource.IMPORTED.value, j.choice, j.label_score, j.sentence_labels, "", "")
        for index, j in judgments
    ]
    if judgment_rows:
        insert_returning_ids(Judgment, JUDGMENT_COLUMNS, judgment_rows)
    return {
        "items": len(item_ids),
        "candidates": len(candidate_ids),
        "tasks": len(task_ids),
        "judgments": len(judgment_rows),
    }


def _task_rows(project_id: int, item_ids: list[int], rows: list[RowIn], candidate_ids: list[int]):
    task_rows, judgments, offset = [], [], 0
    for item_id, row in zip(item_ids, rows, strict=True):
        own = candidate_ids[offset : offset + len(row.candidates)]
        offset += len(row.candidates)
        for spec in row.tasks:
            if spec.judgment is not None:
                judgments.append((len(task_rows), spec.judgment))
            task_rows.append((project_id, item_id, [own[p] for p in spec.positions]))
    return task_rows, judgments
