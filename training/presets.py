"""Launch presets and the expected run time the launch form states.

* ``paper``: the method's own defaults (the engine config's), as the papers set them: full fine-tuning at a
  small learning rate, which on two CPU cores takes long and barely moves a 135M model in a few steps.
* ``quick``: for the preference methods on a causal LM, a LoRA run sized to move the bundled model's
  held-out margin visibly in minutes on two CPU cores (numbers in ``QUICK_MEASURED``).

The run-time estimate is the step plan times a measured step time, plus the reference pass and the
held-out generations, for a model and settings whose step time was measured (``STEP_SECONDS``); for
anything else the form says it has no measured figure rather than guess.
"""

from __future__ import annotations

import dataclasses

from training.engine import METHODS

PRESETS = {"paper": "paper defaults", "quick": "quick (LoRA, minutes on CPU)"}

QUICK = {
    "lora": True,
    "lora_r": 16,
    "lora_alpha": 32.0,
    "learning_rate": 5e-4,
    "max_steps": 30,
    "epochs": 1000,
    "batch_size": 4,
    "warmup_ratio": 0.1,
    "eval_steps": 10,
    "logging_steps": 1,
    "max_length": 256,
    "save_steps": None,
}
"""The quick preset (``max_steps`` decides the plan; ``epochs`` only lets a small version repeat)."""

STEP_SECONDS = {("bundled", True, 4, 256): 4.0}
"""Measured seconds per optimizer step: (model, LoRA, batch size, max length) → seconds, fp32 on two CPU
cores (``docs/presets.md`` gives the command and the run)."""
LOAD_SECONDS = 25.0
"""Loading the bundled model (its converted copy) and the adapters, same measurement."""
REFERENCE_SECONDS_PER_ROW = 2.0
"""The reference pass, per training or held-out row, for the bundled model (same measurement)."""
GENERATION_SECONDS = 12.0
"""One held-out prompt answered by the base and the trained model (48 new tokens each), bundled model."""


def preset_names(method: str) -> list[str]:
    """The presets ``method`` offers: quick only where its config takes every quick field."""
    fields = {f.name for f in dataclasses.fields(METHODS[method].config)}
    return ["paper", "quick"] if set(QUICK) <= fields else ["paper"]


def preset_values(method: str, preset: str) -> dict:
    """The launch form's initial hyperparameters for ``preset`` (empty: the config's own defaults)."""
    return dict(QUICK) if preset == "quick" and "quick" in preset_names(method) else {}


def expected_seconds(*, model: str, config: dict, steps: int, rows: int, generations: int) -> float | None:
    """Seconds a CPU run of ``steps`` steps should take, or None without a measured step time."""
    key = (model, bool(config.get("lora")), config.get("batch_size"), config.get("max_length"))
    per_step = STEP_SECONDS.get(key)
    if per_step is None or config.get("gradient_accumulation_steps", 1) != 1:
        return None
    return (
        LOAD_SECONDS + steps * per_step + rows * REFERENCE_SECONDS_PER_ROW + generations * GENERATION_SECONDS
    )
