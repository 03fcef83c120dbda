"""Metric batches commit in step order even when the training thread and the flusher thread both flush."""

import threading
import time

from training.services import metrics


def test_a_later_flush_waits_for_an_earlier_one_to_commit(monkeypatch):
    committed, first_started = [], threading.Event()

    def slow_write(*, job_id, points):
        steps = [step for step, *_ in points]
        if not committed and not first_started.is_set():
            first_started.set()
            time.sleep(0.3)  # the first batch is still being written when the second flush starts
        committed.append(max(steps))
        return len(steps)

    monkeypatch.setattr(metrics, "metrics_write_batch", slow_write)
    sink = metrics.DbMetrics(job_id=1)
    for step in (1, 2, 3):
        sink.log({"loss": 0.5}, step)
    background = threading.Thread(target=sink.flush)
    background.start()
    first_started.wait(timeout=5)
    sink.log({"loss": 0.4}, 4)
    sink.flush()
    background.join()
    assert committed == [3, 4]


def test_a_failed_write_keeps_its_points_for_the_next_flush(monkeypatch):
    import pytest
    from django.db import DatabaseError

    written, failures = [], ["database is locked"]

    def flaky_write(*, job_id, points):
        if failures:
            raise DatabaseError(failures.pop())
        written.extend(step for step, *_ in points)
        return len(points)

    monkeypatch.setattr(metrics, "metrics_write_batch", flaky_write)
    sink = metrics.DbMetrics(job_id=1)
    sink.log({"loss": 0.5}, 1)
    with pytest.raises(DatabaseError):
        sink.flush()
    sink.log({"loss": 0.4}, 2)
    sink.flush()
    assert written == [1, 2] and not sink.pending()
