"""The worker's tail of a child's ``metrics.jsonl`` across a resume: the resumed engine replaces the file
by the lines up to its checkpoint and appends from there; the tail must read the new file from its
start, not from its offset in the old one (which lands mid-line once the new file has grown past it)."""

import json

from training.engine.runtime.metrics import JsonlMetrics, read_metrics
from training.services.child_run import MetricsTail


def _line(step: int) -> str:
    return json.dumps({"step": step, "loss": 0.5 + step / 1000}) + "\n"


def test_the_tail_follows_a_resumed_run_that_replaced_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line(s) for s in range(1, 8)))
    tail = MetricsTail(path, after=0)
    assert [r["step"] for r in tail.read()] == list(range(1, 8))

    resumed = JsonlMetrics(path, resume_step=6)  # the checkpoint was step 6; step 7 comes again
    for step in range(7, 12):
        resumed.log({"loss": 0.5 + step / 100, "learning_rate": 1e-5}, step)
    assert [r["step"] for r in tail.read()] == list(range(8, 12))  # step 7 was already recorded


def test_a_resume_drops_the_line_a_killed_run_left_unfinished(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line(1) + _line(2) + _line(3)[:9])
    JsonlMetrics(path, resume_step=2).log({"loss": 0.25}, 3)
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 0.501), (2, 0.502), (3, 0.25)]
