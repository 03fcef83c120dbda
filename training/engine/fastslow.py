"""Fast-slow DPO (OFS): two LoRA adapters on one base, two learning rates, a chase term, a swap rule.

Each step both adapters see the same batch; the loss is ``ℓ_fast + ℓ_slow + λ·|ℓ_fast − ℓ_slow|`` (each ℓ a
DPO loss against the base, i.e. adapters disabled).  When the slow adapter's loss stays below the fast
one's for ``swap_patience`` consecutive steps, the two swap learning rates (roles).  The final model is the
adapter that is fast at the end (named in ``fast_adapter.txt``); both adapter folders
(``m1/``, ``m2/``) are saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from training.engine.config import ConfigError, TrainConfig, register_method
from training.engine.evaluate import pair_logps
from training.engine.loop import Run, TrainResult, attach_lora, setup_run
from training.engine.metrics import JsonlMetrics
from training.engine.objectives import combine, pair_metrics
from training.engine.optim import lr_factor, step_plan


@register_method
@dataclass(frozen=True, kw_only=True)
class FastSlowDPOConfig(TrainConfig):
    """Fast-slow DPO with two LoRA adapters (``lora`` is implied)."""

    method: ClassVar[str] = "fast_slow_dpo"
    fast_lr_ratio: float = 4.0
    """Learning rate of the fast adapter ÷ that of the slow one (slow uses ``learning_rate``)."""
    chase_weight: float = 0.1
    """λ of the chase term λ·|ℓ_fast − ℓ_slow|."""
    swap_patience: int = 1
    """Swap roles after the slow loss is below the fast loss this many consecutive steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.fast_lr_ratio >= 1:
            raise ConfigError(f"fast_lr_ratio: must be ≥ 1, got {self.fast_lr_ratio}")
        if not self.chase_weight >= 0:
            raise ConfigError(f"chase_weight: must be ≥ 0, got {self.chase_weight}")
        if not isinstance(self.swap_patience, int) or self.swap_patience < 1:
            raise ConfigError(f"swap_patience: must be a positive integer, got {self.swap_patience!r}")


def fast_slow_loss(fast: Tensor, slow: Tensor, *, chase_weight: float) -> Tensor:
    """``ℓ_fast + ℓ_slow + λ·|ℓ_fast − ℓ_slow|`` for scalar losses."""
    return fast + slow + chase_weight * (fast - slow).abs()


def should_swap(slow_ahead_streak: int, *, patience: int) -> bool:
    """The swap rule: the slow module has beaten the fast one ``patience`` steps in a row."""
    return slow_ahead_streak >= patience


def _use(model, name: str) -> None:
    model.set_adapter(name)
    for pname, param in model.named_parameters():
        if "lora_" in pname:
            param.requires_grad_(True)  # keep both adapters trainable (set_adapter freezes the inactive one)


def _adapter_loss(run: Run, name: str, batch, ref, terms):
    _use(run.model, name)
    with torch.autocast("cpu", dtype=run.autocast, enabled=run.autocast is not None):
        lp = pair_logps(run.model, batch, *ref)
    loss, out = combine(terms, lp)
    return loss, pair_metrics(out, lp, loss)


def train_fast_slow(
    config: FastSlowDPOConfig, *, callbacks=(), should_cancel=None, **_ignored
) -> TrainResult:
    """Train both adapters; metrics: the fast adapter's TRL metrics, fast/loss, slow/loss, fast_slow/swaps."""
    run = setup_run(replace(config, lora=False))
    run.model = attach_lora(run.model, config, adapter_name="m1")
    run.model.add_adapter("m2", run.model.peft_config["m1"])
    _use(run.model, "m1")
    params = {
        n: [p for k, p in run.model.named_parameters() if "lora_" in k and f".{n}." in k]
        for n in ("m1", "m2")
    }
    opt = torch.optim.AdamW(
        [{"params": params["m1"]}, {"params": params["m2"]}],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    plan, terms = step_plan(len(run.train_pairs), config), config.objective_terms()
    warmup = round(config.warmup_ratio * len(plan))
    fast, streak, swaps = "m1", 0, 0
    sinks = [JsonlMetrics(Path(config.output_dir) / "metrics.jsonl"), *callbacks]
    result = TrainResult("succeeded", 0, Path(config.output_dir), None, dropped=run.dropped)
    for step_idx, group in enumerate(plan):
        if should_cancel is not None and should_cancel():
            result.status = "cancelled"
            break
        tick = time.perf_counter()
        factor = lr_factor(step_idx, total=len(plan), warmup=warmup, kind=config.lr_scheduler)
        for i, name in enumerate(("m1", "m2")):
            ratio = config.fast_lr_ratio if name == fast else 1.0
            opt.param_groups[i]["lr"] = config.learning_rate * ratio * factor
        positions = [i for mb in group for i in mb]
        batch = run.collator([run.train_pairs[i] for i in positions])
        ref = (run.train_ref["chosen"][positions], run.train_ref["rejected"][positions])
        slow = "m2" if fast == "m1" else "m1"
        loss_f, metrics = _adapter_loss(run, fast, batch, ref, terms)
        loss_s, _ = _adapter_loss(run, slow, batch, ref, terms)
        total = fast_slow_loss(loss_f, loss_s, chase_weight=config.chase_weight)
        if not torch.isfinite(total):
            raise ValueError(f"step {step_idx + 1}: loss is {float(total)}")
        total.backward()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(params["m1"] + params["m2"], config.max_grad_norm or float("inf"))
        )
        opt.step()
        opt.zero_grad(set_to_none=True)
        streak = streak + 1 if float(loss_s.detach()) < float(loss_f.detach()) else 0
        if should_swap(streak, patience=config.swap_patience):
            fast, streak, swaps = slow, 0, swaps + 1
        metrics.update(
            {
                "loss": float(total.detach()),
                "fast/loss": float(loss_f.detach()),
                "slow/loss": float(loss_s.detach()),
                "fast_slow/swaps": float(swaps),
                "grad_norm": grad_norm,
                "learning_rate": opt.param_groups[0 if fast == "m1" else 1]["lr"],
                "throughput/pairs_per_s": len(positions) / (time.perf_counter() - tick),
            }
        )
        for sink in sinks:
            sink.log(metrics, step_idx + 1)
        result.step, result.metrics = step_idx + 1, metrics
    final = Path(config.output_dir) / f"checkpoint-{result.step}"
    run.model.save_pretrained(final)  # one peft adapter folder per module: m1/ and m2/
    run.tokenizer.save_pretrained(final)
    (final / "fast_adapter.txt").write_text(fast + "\n")
    result.last_checkpoint = final
    return result
