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
