"""The stages a training job reports (``services/runner.StageReporter``), as its page says them."""

from datetime import datetime

STAGES = {
    "loading": "loading the model",
    "reference": "computing reference log-probs",
    "training": "training",
    "evaluating": "evaluating on held-out data",
    "writing": "writing artifacts",
}
"""The engine's ``on_stage`` stages (loading, reference), then the worker's own."""


def stage_timeline(history: list[dict], *, until: datetime, running: bool, step: int = 0) -> list[dict]:
    """The stages of ``history`` (``TrainingJob.stage_history``) as the page lists them: each one's words,
    its attempt when not the first, how long it took (the last one: until ``until``), its n of N (for
    training, the steps), and whether it is the one under way."""
    timeline = []
    for i, entry in enumerate(history):
        started = datetime.fromisoformat(entry["started"])
        ended = datetime.fromisoformat(history[i + 1]["started"]) if i + 1 < len(history) else until
        current = running and i == len(history) - 1
        done, total = entry.get("done", 0), entry.get("total", 0)
        if entry["stage"] == "training" and current:
            done = step
        timeline.append(
            {
                "stage": entry["stage"],
                "label": STAGES.get(entry["stage"], entry["stage"]),
                "attempt": entry.get("attempt", 1),
                "seconds": max(0.0, (ended - started).total_seconds()),
                "done": done,
                "total": total,
                "current": current,
            }
        )
    return timeline
