"""The stages a training job reports (``services/runner.StageReporter``), as its page says them."""

STAGES = {
    "loading": "loading the model",
    "reference": "computing reference log-probs",
    "training": "training",
    "evaluating": "evaluating on held-out data",
    "writing": "writing artifacts",
}
"""The engine's ``on_stage`` stages (loading, reference), then the worker's own."""
