"""The one training loop every recipe runs on: ``run(recipe, config, *, callbacks, should_cancel, guard,
resume)``.

The run is seeded; the step plan comes from the recipe's stages; each step accumulates the gradients of
its micro-batches, clips them, steps AdamW and the schedule, and reports one set of metrics.  Checkpoints
(every ``save_steps``, on cancel and at the end) hold the weights, optimizer, schedule, RNG, data position
and the recipe's own state, so ``resume`` reproduces the uninterrupted run's metrics; older ones beyond
``keep_checkpoints`` are deleted once a new one is in place.  At the end the
recipe exports ``final/``, the model every consumer loads.

Every file the run writes goes through ``guard()`` first (a job's attempt raises there once another attempt
owns the job, so a paused worker that wakes writes nothing), and folders are written privately and renamed
into place.  A cancel is seen before every step and, through ``Recipe.between_batches``, between the batches
of reference and evaluation passes.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from training.engine.runtime.checkpoint import (
    latest_checkpoint,
    load_state,
    private_folder,
    prune_checkpoints,
    publish,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from training.engine.runtime.config import RunConfig
from training.engine.runtime.device import resolve_device
from training.engine.runtime.distributed import Dist, DistributedError
from training.engine.runtime.memory import retain_freed_memory
from training.engine.runtime.metrics import MetricsCallback, open_sinks
from training.engine.runtime.optim import build_optimizer, build_scheduler
from training.engine.runtime.recipe import Interrupted, Recipe, Stage
from training.engine.runtime.sharding import (
    gathered_bits,
    gathered_state,
    held_fraction,
    load_optimizer_state,
    local_value,
    shard,
)

FINAL = "final"
SAMPLES = "samples"


class NonFiniteError(RuntimeError):
    """A loss or gradient norm became NaN/inf; the message names the step and the metric."""


@dataclass
class TrainResult:
    """How a run ended and where its outputs are."""

    status: str
    """``succeeded`` or ``cancelled``."""
    step: int
    """Optimizer steps done."""
    output_dir: Path
    last_checkpoint: Path | None
    final_model: Path | None = None
    """``<output_dir>/final``: a plain Hugging Face folder (None when cancelled or ``save_final`` is off)."""
    metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    reference_was_cached: bool = False


def check_finite(name: str, value: float, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(f"step {step}: {name} is {value}; training stopped (lower the learning rate?)")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class _Run:
    """One run's moving parts, shared by the step, checkpoint and stage helpers below."""

    recipe: Recipe
    config: RunConfig
    out_dir: Path
    total: int
    emit: Callable[[dict[str, float], int], None]
    saved: Callable[[Path], None]
    guard: Callable[[], None]
    result: TrainResult
    dist: Dist = field(default_factory=Dist)
    sharded: torch.nn.Module | None = None
    """The FSDP root module (``runtime/sharding.py``) when the run shards its model, else None."""
    weights_held: float = 1.0
    """The share of the trainable weights rank 0 holds (``dist/weights_held``: 1, or ~1/N under FSDP)."""
    gathered_bits: int | None = None
    """Bits per weight the FSDP units gather in (``dist/gathered_bits``), None when unsharded."""
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def checkpoint(self, step: int) -> Path:
        """``checkpoint-N``, written by rank 0 (every rank holds the same weights and optimizer state, or
        under FSDP hands its shards to rank 0 first); the other ranks wait for it, so none runs ahead of a
        checkpoint a resume would start from."""
        folder = self.out_dir / f"checkpoint-{step}"
        write_model = self.recipe.save
        if self.sharded is not None:
            weights, optimizer_state = gathered_state(self.sharded, self.optimizer)
            write_model = lambda target: self.recipe.save(target, state_dict=weights)  # noqa: E731
        else:
            optimizer_state = self.optimizer.state_dict() if self.optimizer else {}
        rank_rng = self.dist.gather_objects(rng_state())  # each rank resumes its own random streams
        if self.dist.is_main:
            folder = save_checkpoint(
                folder,
                write_model=write_model,
                optimizer_state=optimizer_state,
                scheduler=self.scheduler,
                step=step,
                extra={"recipe": self.recipe.state_dict(), "plan_length": self.total},
                guard=self.guard,
                rank_rng=rank_rng,
            )
            self.saved(folder)
            self.prune(folder)
        self.dist.barrier()
        return folder

    def prune(self, newest: Path) -> None:
        """Delete the checkpoints beyond ``keep_checkpoints`` once ``newest`` is in place (rank 0 only,
        through the guard: a stale attempt deletes nothing of the attempt that owns the run now)."""
        if self.config.keep_checkpoints is None:
            return
        self.guard()
        prune_checkpoints(self.out_dir, newest=newest, keep=self.config.keep_checkpoints)


def prepare(recipe: Recipe, config: RunConfig, dist: Dist | None = None) -> Recipe:
    """Seed the run and set the recipe up on the config's device (model, data, caches).  With more than
    one process, the ranks set up side by side (the DPO recipe's reference pass is shared among them),
    start from rank 0's trainable weights and, under FSDP, shard the model."""
    dist = dist or Dist()
    if dist.active and not getattr(recipe, "supports_distributed", False):
        raise DistributedError(
            f"{config.method} does not run on more than one process yet; launch it with one process"
        )
    retain_freed_memory()
    seed_everything(config.seed)
    recipe.dist = dist
    recipe.setup(resolve_device(dist.device_spec(config.device)))
    if dist.active:
        dist.broadcast_from_main([p for group in recipe.param_groups() for p in group["params"]])
    if dist.active and config.strategy == "fsdp":
        if not getattr(recipe, "supports_fsdp", False):
            raise DistributedError(f"{config.method} does not shard with FSDP yet; use strategy ddp")
        root, layers = fsdp_units(recipe, config)
        gather_dtype = torch.bfloat16 if config.precision == "bf16" else None
        shard(root, layers, sharding=config.fsdp_sharding, param_dtype=gather_dtype)
        recipe.sharded_root = root
    return recipe


def fsdp_units(recipe: Recipe, config: RunConfig) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    """The root FSDP unit and the modules sharded as units of their own under ``config.fsdp_wrap``."""
    root, layers = recipe.fsdp_units()
    return root, ([] if config.fsdp_wrap == "model" else list(layers))


def run(
    recipe: Recipe,
    config: RunConfig,
    *,
    callbacks: Sequence[MetricsCallback] = (),
    should_cancel: Callable[[], bool] | None = None,
    guard: Callable[[], None] = lambda: None,
    resume: bool = False,
    progress: bool = False,
    dist: Dist | None = None,
) -> TrainResult:
    """Train a ``prepare``d recipe (as rank ``dist`` of its processes: ``runtime.distributed``); metrics go
    to ``callbacks`` and ``<output_dir>/metrics.jsonl``,
    checkpoints to ``<output_dir>/checkpoint-N`` (callbacks with ``on_saved(path)`` hear each one, and
    ``final/``, once in place).  ``should_cancel()`` is checked before every step and between the batches
    of evaluation passes; on True the run saves a checkpoint and returns ``status="cancelled"``.
    ``guard()`` runs before every write.  Raises NonFiniteError on NaN/inf."""
    dist = dist or Dist()
    if dist.active and should_cancel is not None:
        asked = should_cancel
        should_cancel = lambda: dist.agree(asked())  # noqa: E731 - every rank stops at the same step
    stages = recipe.stages()
    total = sum(len(stage.plan) for stage in stages)
    out_dir = Path(config.output_dir)
    checkpoint = latest_checkpoint(out_dir) if resume else None
    state = load_state(checkpoint) if checkpoint is not None else None
    if state is not None:
        planned = state.extra.get("plan_length", total)
        if planned != total:
            raise ValueError(
                f"{checkpoint}: written by a run of {planned} steps, this config plans {total}; resume "
                "with the config and data the checkpoint was written with"
            )
        recipe.load(checkpoint)
        recipe.load_state_dict(state.extra.get("recipe", {}))
    start = state.step if state is not None else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    sinks, bar = [], None
    if dist.is_main:  # the other ranks' metrics reach rank 0 through the step's reduction
        sinks, bar = open_sinks(
            out_dir,
            callbacks,
            total=total,
            start=start,
            resumed=state is not None,
            progress=progress,
            guard=guard,
        )

    def emit(metrics: dict[str, float], step: int) -> None:
        for sink in sinks:
            sink.log(metrics, step)

    def saved(path: Path) -> None:
        for sink in sinks:
            if hasattr(sink, "on_saved"):
                sink.on_saved(path)

    facts = recipe.report()
    result = TrainResult(
        "succeeded",
        start,
        out_dir,
        checkpoint,
        dropped=facts.get("dropped", {}),
        reference_was_cached=facts.get("reference_was_cached", False),
    )
    current = _Run(recipe, config, out_dir, total, emit, saved, guard, result, dist, recipe.sharded_root)
    offset = 0
    try:
        if start == 0:
            _write_samples(current, 0)
        for index, stage in enumerate(stages):
            end = offset + len(stage.plan)
            if start < end and not _run_stage(current, index, stage, offset, start, state, should_cancel):
                break
            offset = end
    except Interrupted:  # inside an evaluation, or a later stage's reference pass
        result.status = "cancelled"
        if result.step > start:  # else the checkpoint resumed from (or none) is the last one
            result.last_checkpoint = current.checkpoint(result.step)
    if bar:
        bar.close()
    if result.status == "succeeded" and config.save_final and result.last_checkpoint is not None:
        if dist.is_main:
            result.final_model = _export_final(recipe, result.last_checkpoint, out_dir, guard)
            saved(result.final_model)
        else:
            result.final_model = out_dir / FINAL
        dist.barrier()
    return result


def _run_stage(run_: _Run, index: int, stage: Stage, offset: int, start: int, state, should_cancel) -> bool:
    """Train one stage from global step ``max(start, offset)``; False when the run was cancelled."""
    config, recipe, result = run_.config, run_.recipe, run_.result
    first = max(start, offset)
    resumed_inside = state is not None and first > offset
    if offset and first == offset and should_cancel is not None and should_cancel():
        # before a later stage's set-up (Curry-DPO's reference pass), not after it
        result.status, result.last_checkpoint = "cancelled", run_.checkpoint(offset)
        return False
    recipe.begin_stage(index, resumed=resumed_inside)
    recipe_groups = recipe.param_groups()
    run_.optimizer = build_optimizer(recipe_groups, config)
    run_.scheduler = build_scheduler(run_.optimizer, config, len(stage.plan), recipe.lr_scales)
    if resumed_inside:
        if run_.sharded is not None:
            load_optimizer_state(run_.sharded, run_.optimizer, state.optimizer)
        else:
            run_.optimizer.load_state_dict(state.optimizer)
        run_.scheduler.load_state_dict(state.scheduler)
    if state is not None and first == start:
        set_rng_state(state.rng_for(run_.dist.rank, run_.dist.world_size))
    params = [p for group in recipe_groups for p in group["params"]]
    run_.weights_held = held_fraction(params)
    run_.gathered_bits = gathered_bits(run_.sharded) if run_.sharded is not None else None
    seen = list(itertools.accumulate(sum(len(mb) for mb in group) for group in stage.plan))
    for step_idx in range(first, offset + len(stage.plan)):
        step = step_idx + 1
        if should_cancel is not None and should_cancel():
            result.status, result.last_checkpoint = "cancelled", run_.checkpoint(step_idx)
            return False
        metrics = _train_step(run_, stage.plan[step_idx - offset], params, step)
        metrics["epoch"] = seen[step_idx - offset] / stage.n_examples
        result.step, result.metrics = step, metrics
        _report_and_save(run_, step, metrics, stage_end=step_idx == offset + len(stage.plan) - 1)
    return True


def _train_step(run_: _Run, micro_batches: list[list[int]], params, step: int) -> dict[str, float]:
    """Accumulate the micro-batches' gradients, clip, step; the step's metrics."""
    recipe, config, optimizer, scheduler = run_.recipe, run_.config, run_.optimizer, run_.scheduler
    dist = run_.dist
    tick = time.perf_counter()
    n_examples = sum(len(mb) for mb in micro_batches)
    learning_rate = max(scheduler.get_last_lr())
    sums: dict[str, float] = {}
    examples, tokens = 0, 0
    for positions in micro_batches:
        mine = dist.shard(positions)
        # the gradients are averaged over the ranks: N·|shard|/|batch| makes that the one-process gradient.
        # A rank whose shard is empty runs a forward and backward at scale 0: its step has the same shape.
        scale = dist.world_size * len(mine) / n_examples
        recipe.micro_batch = positions
        out = recipe.micro_step(mine or list(positions[:1]), scale=scale)
        if mine:
            if not dist.active:
                check_finite("loss", out.metrics["loss"], step)
            for name, value in out.metrics.items():
                sums[name] = sums.get(name, 0.0) + value * out.examples
            examples, tokens = examples + out.examples, tokens + out.tokens
    metrics, examples, tokens = dist.weighted_means(sums, examples, tokens)
    check_finite("loss", metrics["loss"], step)  # every rank sees the same value, so all stop together
    if run_.sharded is None:  # FSDP reduce-scatters (and averages) each unit's gradients in its backward
        dist.average_gradients(params)
    max_norm = config.max_grad_norm if config.max_grad_norm is not None else float("inf")
    grad_norm = float(local_value(torch.nn.utils.clip_grad_norm_(params, max_norm)))
    check_finite("grad_norm", grad_norm, step)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    metrics.update(recipe.end_step(metrics))
    scheduler.step()  # after end_step: the next step's rates see the recipe's new lr_scales
    elapsed = time.perf_counter() - tick
    metrics.update(
        {
            "grad_norm": grad_norm,
            "learning_rate": learning_rate,
            "dist/world_size": dist.world_size,
            "dist/weights_held": run_.weights_held,
        }
    )
    if run_.gathered_bits is not None:
        metrics["dist/gathered_bits"] = run_.gathered_bits
    metrics[f"throughput/{recipe.unit}_per_s"] = n_examples / elapsed
    if tokens:
        metrics["throughput/tokens_per_s"] = tokens / elapsed
    return metrics


def _report_and_save(run_: _Run, step: int, metrics: dict[str, float], *, stage_end: bool) -> None:
    config, result = run_.config, run_.result
    last = step == run_.total
    logged = dict(metrics) if step % config.logging_steps == 0 or last else {}
    if (config.eval_steps and step % config.eval_steps == 0) or stage_end:
        result.eval_metrics = run_.recipe.evaluate()
        logged.update(result.eval_metrics)
        _write_samples(run_, step)
    elif run_.recipe.writes_samples and run_.recipe.samples_due():
        _write_samples(run_, step)
    if logged:
        # One emission per step: a live reader that has seen step N never misses a later point of N.
        run_.emit(logged, step)
    if (config.save_steps and step % config.save_steps == 0) or (last and config.save_final):
        result.last_checkpoint = run_.checkpoint(step)


def _write_samples(run_: _Run, step: int) -> None:
    """``<output_dir>/samples/step-N``: what the recipe draws from the model after step N (0 = the base)."""
    if not run_.recipe.writes_samples or not run_.dist.is_main:
        return
    target = run_.out_dir / SAMPLES / f"step-{step}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_folder(target)
    run_.recipe.write_samples(tmp)
    run_.saved(publish(tmp, target, run_.guard))


def _export_final(recipe: Recipe, checkpoint: Path, out_dir: Path, guard: Callable[[], None]) -> Path:
    """``final/`` from the last checkpoint, written beside it and renamed into place."""
    target = out_dir / FINAL
    tmp = private_folder(target)
    recipe.export_final(checkpoint, tmp)
    return publish(tmp, target, guard)


def write_config(out_dir: Path, data: dict) -> None:
    """``config.yaml`` beside the run's outputs: the file ``python -m training.engine train`` accepts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    (out_dir / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
