"""The one table of training methods: method name → config class → recipe, and the engine's entry points.

``train(config)`` runs any method; the CLI (``python -m training.engine train CONFIG.yaml``) and the web
app both go through it.  ``accepts`` is what dataset kinds (a project's task type) a method trains on; the
web app refuses any other kind at launch.  A new method is one row here (``docs/architecture.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.engine.recipes.curry_dpo import CurryDPOConfig, CurryDPORecipe
from training.engine.recipes.diffusion_dpo import DiffusionDPOConfig, DiffusionDPORecipe
from training.engine.recipes.dpo import DPORecipe
from training.engine.recipes.dpo_configs import (
    CDPOConfig,
    CREAMConfig,
    DPOConfig,
    FlexConfig,
    HingeConfig,
    IPOConfig,
    MaskDPOConfig,
    RDPOConfig,
    SigmoidNormConfig,
    StepDPOConfig,
)
from training.engine.recipes.fast_slow_dpo import FastSlowDPOConfig, FastSlowDPORecipe
from training.engine.recipes.ppo import PPOConfig, PPORecipe
from training.engine.recipes.reward_model import RewardModelConfig, RewardModelRecipe
from training.engine.recipes.rto import RTOConfig, RTORecipe
from training.engine.runtime.checkpoint import latest_checkpoint, load_state
from training.engine.runtime.config import MAX_STEPS, ConfigError, RunConfig
from training.engine.runtime.distributed import Dist
from training.engine.runtime.loop import TrainResult, prepare, run, write_config
from training.engine.runtime.metrics import MetricsCallback, announce_stage
from training.engine.runtime.recipe import Interrupted


@dataclass(frozen=True)
class Method:
    """One trainable method: its config dataclass, the recipe that runs it, the dataset kinds it takes."""

    config: type[RunConfig]
    recipe: type
    accepts: tuple[str, ...]

    @property
    def model_kind(self) -> str:
        """The kind of model a run trains and registers (``causal_lm``, ``reward_model``, ``diffusion``)."""
        return self.recipe.model_kind

    @property
    def doc(self) -> str:
        return (self.config.__doc__ or "").strip()


def _method(config: type[RunConfig], recipe: type, accepts: tuple[str, ...] | None = None) -> Method:
    return Method(config, recipe, accepts if accepts is not None else recipe.accepts)


METHODS: dict[str, Method] = {
    "dpo": _method(DPOConfig, DPORecipe),
    "cdpo": _method(CDPOConfig, DPORecipe),
    "rdpo": _method(RDPOConfig, DPORecipe),
    "cream": _method(CREAMConfig, DPORecipe),
    "ipo": _method(IPOConfig, DPORecipe),
    "hinge": _method(HingeConfig, DPORecipe),
    "sigmoid_norm": _method(SigmoidNormConfig, DPORecipe),
    "flex": _method(FlexConfig, DPORecipe),
    "step_dpo": _method(StepDPOConfig, DPORecipe, ("stepwise",)),
    "mask_dpo": _method(MaskDPOConfig, DPORecipe, ("factuality",)),
    "curry_dpo": _method(CurryDPOConfig, CurryDPORecipe),
    "fast_slow_dpo": _method(FastSlowDPOConfig, FastSlowDPORecipe),
    "diffusion_dpo": _method(DiffusionDPOConfig, DiffusionDPORecipe),
    "reward_model": _method(RewardModelConfig, RewardModelRecipe),
    "ppo": _method(PPOConfig, PPORecipe),
    "rto": _method(RTOConfig, RTORecipe),
}


def method_of(name: str) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"method: unknown {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build the config of ``data["method"]``; unknown or missing fields raise ConfigError."""
    data = dict(data)
    method = data.pop("method", "dpo")
    cls = method_of(method).config
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field for method {method} (unknown: {unknown})")
    for name, value in data.items():
        if isinstance(value, list):
            data[name] = tuple(value)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"config for {method}: {exc}") from exc


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """``asdict`` plus the method name: what the web app stores and ``config_from_dict`` reads."""
    return {"method": config.method, **dataclasses.asdict(config)}


def load_config(path: str | Path) -> RunConfig:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields")
    return config_from_dict(data)


def recipe_for(config: RunConfig, **kwargs):
    """The (not yet set up) recipe that trains ``config``; ``kwargs`` go to its constructor."""
    return method_of(config.method).recipe(config, **kwargs)


def planned_steps(config: RunConfig, n_train_rows: int) -> int:
    """Optimizer steps a run of ``config`` on ``n_train_rows`` training rows plans, before any row is
    dropped by tokenization (the run reports the exact count to its callbacks' ``on_start``).  A plan over
    ``MAX_STEPS`` raises ConfigError naming ``epochs`` (only a run without ``max_steps`` can reach it)."""
    steps = method_of(config.method).recipe.planned_steps(config, n_train_rows)
    if steps > MAX_STEPS:
        raise ConfigError(
            f"epochs: {config.epochs} epochs of {n_train_rows:,} rows plan {steps:,} optimizer steps, over "
            f"the limit of {MAX_STEPS:,}: lower epochs or set max_steps"
        )
    return steps


def train(
    config: RunConfig,
    *,
    callbacks: Sequence[MetricsCallback] = (),
    should_cancel: Callable[[], bool] | None = None,
    guard: Callable[[], None] = lambda: None,
    resume: bool = False,
    progress: bool = False,
    recipe=None,
) -> TrainResult:
    """Train any method of the table; ``recipe`` (not set up) replaces the table's, e.g. with a
    pre-loaded model.  A cancel during the set-up (the reference pass) ends the run ``cancelled`` with the
    checkpoint it resumed from.  See ``runtime.loop.run`` for the rest."""
    out = Path(config.output_dir)
    dist = Dist.from_env()  # a world of one unless torchrun started this process
    guard()
    if dist.is_main:
        write_config(out, config_to_dict(config))
    recipe = recipe if recipe is not None else recipe_for(config)
    # across processes a cancel is agreed on between steps: a pass one rank cut short would strand the rest
    recipe.should_stop = None if dist.active else should_cancel
    if dist.is_main:
        recipe.report_stage = lambda stage, done, total: announce_stage(callbacks, stage, done, total)
        announce_stage(callbacks, "loading")
    try:
        recipe = prepare(recipe, config, dist)
    except Interrupted:
        checkpoint = latest_checkpoint(out) if resume else None
        return TrainResult("cancelled", load_state(checkpoint).step if checkpoint else 0, out, checkpoint)
    return run(
        recipe,
        config,
        callbacks=callbacks,
        should_cancel=should_cancel,
        guard=guard,
        resume=resume,
        progress=progress and dist.is_main,
        dist=dist,
    )
