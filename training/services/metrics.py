"""Metric points: written in batches by a DB-backed engine callback, never twice for one step."""

import math
import threading
import time
from collections.abc import Iterable

from django.db import connection, transaction

from ..models import MetricPoint

COLUMNS = ("job_id", "step", "name", "value", "wall_time")
PG_TYPES = ("bigint[]", "integer[]", "text[]", "double precision[]", "double precision[]")


def metrics_write_batch(*, job_id: int, points: Iterable[tuple[int, str, float, float]]) -> int:
    """Insert ``(step, name, value, wall_time)`` points in one transaction; a (job, name, step) already stored
    is kept as is.  Non-finite values are stored as NULL (JSON has no NaN).

    Plain SQL rather than ``bulk_create``: the flusher writes thousands of points a second for a fast model,
    and a model instance (and on PostgreSQL five bound parameters) per point cost more than the insert.
    PostgreSQL gets one statement over five arrays; SQLite one prepared statement run per row (in C)."""
    rows = [
        (job_id, step, name[:80], value if math.isfinite(value) else None, wall)
        for step, name, value, wall in points
    ]
    if not rows:
        return 0
    table = connection.ops.quote_name(MetricPoint._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(f"%s::{kind}" for kind in PG_TYPES)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING",  # noqa: S608 - quoted names
                [list(column) for column in zip(*rows, strict=True)],
            )
            return len(rows)
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",  # noqa: S608 - quoted names
            rows,
        )
    return len(rows)


def metrics_delete_after(*, job_id: int, step: int) -> int:
    """Forget points after ``step`` (a resumed attempt recomputes them from its checkpoint)."""
    return MetricPoint.objects.filter(job_id=job_id, step__gt=step).delete()[0]


class DbMetrics:
    """The engine callback (``log(metrics, step)``): buffers points; the attempt's background thread
    writes them in batches (``flush``) so the training thread only appends to a list.  At every
    ``flush_every``-th step (the checkpoint steps) it flushes at once, so that a resumed job finds every
    point up to its checkpoint already stored.

    ``on_flush(step, points)`` runs after each flush (progress, heartbeat and the log tail);
    ``on_start(total_steps)`` when the run has planned its steps."""

    def __init__(
        self,
        job_id: int,
        *,
        on_flush=None,
        on_start=None,
        flush_every: int | None = None,
        max_buffer: int = 20_000,
    ):
        self.job_id = job_id
        self.on_start_hook = on_start
        self.flush_every = flush_every
        self.max_buffer = max_buffer
        self.on_flush = on_flush
        self.buffer: list[tuple[int, str, float, float]] = []
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.step = 0

    def on_start(self, total_steps: int, start_step: int) -> None:
        if self.on_start_hook is not None:
            self.on_start_hook(total_steps)

    def log(self, metrics: dict[str, float], step: int) -> None:
        wall = time.time()
        points = [(step, name, float(value), wall) for name, value in metrics.items()]
        with self.lock:
            self.buffer.extend(points)
            self.step = max(self.step, step)
            full = len(self.buffer) >= self.max_buffer
        if full or (self.flush_every and step % self.flush_every == 0):
            self.flush()

    def pending(self) -> bool:
        return bool(self.buffer)

    def flush(self) -> None:
        # Batches commit in step order (the training thread and the background thread both flush), so a
        # reader that follows the step cursor never sees step N+1 before the rest of step N.
        with self.write_lock:
            with self.lock:
                points, self.buffer = self.buffer, []
                step = self.step
            if points:
                try:
                    metrics_write_batch(job_id=self.job_id, points=points)
                except Exception:
                    with self.lock:  # kept for the next flush, ahead of what was logged meanwhile
                        self.buffer[:0] = points
                    raise
        if self.on_flush is not None:
            self.on_flush(step, points)
