"""The training loop: ``train(config, *, callbacks, should_cancel, resume)``.

Reference log-probs come from the cache (computed once from the starting weights, before any update), so
no second model copy is ever held.  The run is seeded; resuming from ``checkpoint-N`` restores weights,
optimizer, scheduler, RNG and data position, and reproduces the uninterrupted run's metrics.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from training.engine.checkpoint import (
    latest_checkpoint,
    load_state,
    load_weights,
    save_checkpoint,
    set_rng_state,
)
from training.engine.collate import PackingCollator
from training.engine.config import TrainConfig, config_to_dict
from training.engine.cpu_linear import route_linears
from training.engine.data import TokenizedPair, read_rows, tokenize_rows
from training.engine.device import autocast, resolve_device
from training.engine.evaluate import evaluate_pairs, pair_logps
from training.engine.memory import own_trainable_weights, retain_freed_memory
from training.engine.metrics import MetricsCallback, open_sinks
from training.engine.models import load_model, load_tokenizer, weights_fingerprint
from training.engine.objectives import combine, pair_metrics
from training.engine.optim import build_optimizer, build_scheduler, step_plan
from training.engine.refcache import cached_reference, default_cache_dir


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
    metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    reference_was_cached: bool = False


@dataclass
class Run:
    """Everything a run holds once set up."""

    config: TrainConfig
    model: nn.Module
    tokenizer: object
    collator: PackingCollator
    train_pairs: list[TokenizedPair]
    eval_pairs: list[TokenizedPair]
    train_ref: dict
    eval_ref: dict
    dropped: dict[str, int]
    ref_cached: bool
    autocast: torch.dtype | None


def check_finite(name: str, value: float, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(f"step {step}: {name} is {value}; training stopped (lower the learning rate?)")


def _load_pairs(config: TrainConfig, tokenizer) -> tuple[list, list, dict]:
    train_rows = read_rows(config.train_file, "train")
    eval_rows = read_rows(config.eval_file) if config.eval_file else read_rows(config.train_file, "test")
    train_pairs, report = tokenize_rows(train_rows, tokenizer, max_length=config.max_length)
    eval_pairs, eval_report = tokenize_rows(eval_rows, tokenizer, max_length=config.max_length)
    if not train_pairs:
        raise ValueError(
            f"{config.train_file}: no training pair left after tokenization ({dict(report.dropped)})"
        )
    dropped = {f"train/{k}": v for k, v in report.dropped.items()}
    dropped.update({f"eval/{k}": v for k, v in eval_report.dropped.items()})
    return train_pairs, eval_pairs, dropped


def attach_lora(model: nn.Module, config: TrainConfig, adapter_name: str = "default") -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora, adapter_name=adapter_name)


def setup_run(config: TrainConfig, model: nn.Module | None = None) -> Run:
    """Load model, tokenizer and data; get the reference log-probs (cache) from the starting weights."""
    retain_freed_memory()
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    device = resolve_device(config.device)
    model = (model if model is not None else load_model(config.model)).to(device)
    route_linears(model)
    if not config.lora:
        own_trainable_weights(model)
    collator = PackingCollator(tokenizer.pad_token_id or 0, config.token_budget, device)
    train_pairs, eval_pairs, dropped = _load_pairs(config, tokenizer)
    autocast = torch.bfloat16 if config.precision == "bf16" else None
    fingerprint = weights_fingerprint(model)
    cache_dir = Path(config.ref_cache_dir) if config.ref_cache_dir else default_cache_dir()
    kw = {"batch_size": config.batch_size, "precision": config.precision, "cache_dir": cache_dir}
    train_ref, cached = cached_reference(model, fingerprint, train_pairs, collator, **kw)
    eval_ref = cached_reference(model, fingerprint, eval_pairs, collator, **kw)[0] if eval_pairs else {}
    if config.lora:
        model = attach_lora(model, config)
    return Run(
        config,
        model,
        tokenizer,
        collator,
        train_pairs,
        eval_pairs,
        train_ref,
        eval_ref,
        dropped,
        cached,
        autocast,
    )


def _micro_step(run: Run, positions: list[int], terms, scale: float, step: int) -> tuple[dict, int]:
    batch = run.collator([run.train_pairs[i] for i in positions])
    idx = torch.tensor(positions)
    with autocast(run.collator.device, run.autocast):
        lp = pair_logps(run.model, batch, run.train_ref["chosen"][idx], run.train_ref["rejected"][idx])
    loss, out = combine(terms, lp)
    check_finite("loss", float(loss.detach()), step)
    (loss * scale).backward()
    return pair_metrics(out, lp, loss), batch.n_tokens


def evaluate_run(run: Run, terms) -> dict[str, float]:
    """``eval/…`` metrics of the run's model on its held-out pairs ({} when there are none)."""
    if not run.eval_pairs:
        return {}
    bs = run.config.batch_size
    return evaluate_pairs(
        run.model,
        run.eval_pairs,
        run.eval_ref,
        run.collator,
        terms,
        batch_size=bs,
        autocast_dtype=run.autocast,
    )


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[MetricsCallback] = (),
    should_cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    progress: bool = False,
    run: Run | None = None,
) -> TrainResult:
    """Train ``config``; metrics go to ``callbacks`` and ``<output_dir>/metrics.jsonl``, checkpoints to
    ``<output_dir>/checkpoint-N``.  ``should_cancel()`` is checked before every step; on True the run
    saves a checkpoint and returns ``status="cancelled"``.  Raises NonFiniteError on NaN/inf."""
    run = run or setup_run(config)
    out_dir = Path(config.output_dir)
    model, terms = run.model, config.objective_terms()
    model.train()
    optimizer = build_optimizer(model, config)
    plan = step_plan(len(run.train_pairs), config)
    scheduler = build_scheduler(optimizer, config, len(plan))
    start, ckpt = 0, latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        state = load_state(ckpt)
        load_weights(model, ckpt)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        set_rng_state(state.rng)
        start = state.step
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(_yaml(config_to_dict(config)))
    sinks, bar = open_sinks(
        out_dir, callbacks, total=len(plan), start=start, resumed=ckpt is not None, progress=progress
    )

    def emit(metrics: dict[str, float], step: int) -> None:
        for sink in sinks:
            sink.log(metrics, step)

    def checkpoint(step: int) -> Path:
        extra = {"plan_length": len(plan), "dropped": run.dropped}
        return save_checkpoint(
            out_dir / f"checkpoint-{step}",
            model=model,
            tokenizer=run.tokenizer,
            optimizer=optimizer,
            scheduler=scheduler,
            step=step,
            extra=extra,
        )

    result = TrainResult(
        "succeeded", start, out_dir, ckpt, dropped=run.dropped, reference_was_cached=run.ref_cached
    )
    params = [p for p in model.parameters() if p.requires_grad]
    seen = list(itertools.accumulate(sum(len(mb) for mb in group) for group in plan))
    for step_idx in range(start, len(plan)):
        step = step_idx + 1
        if should_cancel is not None and should_cancel():
            result.status, result.last_checkpoint = "cancelled", checkpoint(step_idx)
            break
        tick = time.perf_counter()
        group = plan[step_idx]
        n_pairs = sum(len(mb) for mb in group)
        lr = scheduler.get_last_lr()[0]
        parts, tokens = [], 0
        for mb in group:
            metrics, n_tok = _micro_step(run, mb, terms, len(mb) / n_pairs, step)
            parts.append((metrics, len(mb)))
            tokens += n_tok
        max_norm = config.max_grad_norm if config.max_grad_norm is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        check_finite("grad_norm", grad_norm, step)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - tick
        metrics = {k: sum(m[k] * n for m, n in parts) / n_pairs for k in parts[0][0]}
        metrics.update(
            {"grad_norm": grad_norm, "learning_rate": lr, "epoch": seen[step_idx] / len(run.train_pairs)}
        )
        metrics.update(
            {"throughput/pairs_per_s": n_pairs / elapsed, "throughput/tokens_per_s": tokens / elapsed}
        )
        result.step, result.metrics = step, metrics
        logged = {}
        if step % config.logging_steps == 0 or step == len(plan):
            logged.update(metrics)
        if (config.eval_steps and step % config.eval_steps == 0) or step == len(plan):
            result.eval_metrics = evaluate_run(run, terms)
            logged.update(result.eval_metrics)
        if logged:
            # One emission per step: a live reader that has seen step N never misses a later point of N.
            emit(logged, step)
        if (config.save_steps and step % config.save_steps == 0) or (step == len(plan) and config.save_final):
            result.last_checkpoint = checkpoint(step)
    if bar:
        bar.close()
    return result


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(
        {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}, sort_keys=False
    )
