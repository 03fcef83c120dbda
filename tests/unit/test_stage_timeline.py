"""A training job's stage list: each stage's words, how long it took, its n of N, a resumed attempt's
stages marked with their attempt, and the one under way."""

from datetime import UTC, datetime, timedelta

from training.job_stages import stage_timeline

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


HISTORY = [
    {"stage": "loading", "attempt": 1, "started": _at(0), "done": 0, "total": 0},
    {"stage": "reference", "attempt": 1, "started": _at(2.5), "done": 6, "total": 6},
    {"stage": "training", "attempt": 1, "started": _at(4), "done": 0, "total": 30},
    {"stage": "loading", "attempt": 2, "started": _at(60), "done": 0, "total": 0},
    {"stage": "training", "attempt": 2, "started": _at(61), "done": 10, "total": 30},
]


def test_a_running_job_lists_each_stage_with_its_duration_and_marks_the_current_one():
    timeline = stage_timeline(HISTORY, until=T0 + timedelta(seconds=70), running=True, step=17)
    assert [(s["label"], s["attempt"], s["seconds"]) for s in timeline] == [
        ("loading the model", 1, 2.5),
        ("computing reference log-probs", 1, 1.5),
        ("training", 1, 56.0),
        ("loading the model", 2, 1.0),
        ("training", 2, 9.0),
    ]
    assert [s["current"] for s in timeline] == [False, False, False, False, True]
    assert (timeline[1]["done"], timeline[1]["total"]) == (6, 6)
    assert (timeline[-1]["done"], timeline[-1]["total"]) == (17, 30)  # the job's step while it trains


def test_a_finished_job_has_no_current_stage_and_its_last_one_ends_when_the_job_did():
    timeline = stage_timeline(HISTORY[:3], until=T0 + timedelta(seconds=34), running=False, step=30)
    assert not any(s["current"] for s in timeline) and timeline[-1]["seconds"] == 30.0
    assert stage_timeline([], until=T0, running=True) == []
