"""The stages a generation job reports, as its page says them: loading its model (a bundled model is
converted into the model cache on first use, which can take minutes), then its own work, counted."""

LOADING = "loading"
RUNNING = "running"

WORK = {
    "candidates": "sampling candidates: item",
    "step_pipeline": "checking solutions: step",
    "image_pairs": "sampling images: image",
    "reward_scores": "scoring candidates: item",
    "reward_comparison": "scoring held-out rows: batch",
    "policy_comparison": "generating and scoring: batch",
    "try_it": "answering: model",
}
"""What the worker does once its model is loaded, and what its n of N counts."""


def stage_line(*, kind: str, stage: str, done: int, total: int) -> str:
    """One line for the job's page: ``loading the model`` or ``sampling candidates: item 3 of 8``."""
    if stage == LOADING:
        return "loading the model (converted into the model cache on its first use)"
    if stage != RUNNING:
        return ""
    work = WORK.get(kind, "working: unit")
    return f"{work} {min(done + 1, total)} of {total}" if total else work.rsplit(":", 1)[0]
