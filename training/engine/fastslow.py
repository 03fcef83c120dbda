"""Fast-slow DPO (OFS): two LoRA adapters on one base, two learning rates, a chase term, a swap rule.

Each step both adapters see the same batch; the loss is ``ℓ_fast + ℓ_slow + λ·|ℓ_fast − ℓ_slow|`` (each ℓ a
DPO loss against the base, i.e. adapters disabled).  When the slow adapter's loss stays below the fast
one's for ``swap_patience`` consecutive steps, the two swap learning rates (roles).  The final model is the
adapter that is fast at the end (named in ``fast_adapter.txt``); both adapter folders
(``m1/``, ``m2/``) are saved.

Checkpoints (every ``save_steps``, on cancel and at the end) hold both adapters, the optimizer, the roles
(which adapter is fast, the swap streak, the swap count) and the RNG, so ``resume`` continues exactly where
the run stopped.  Evaluation every ``eval_steps`` scores the fast adapter.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from training.engine.checkpoint import latest_checkpoint, load_state, save_checkpoint, set_rng_state
from training.engine.config import ConfigError, TrainConfig, register_method
from training.engine.device import autocast
from training.engine.evaluate import pair_logps
from training.engine.loop import Run, TrainResult, attach_lora, check_finite, evaluate_run, setup_run
from training.engine.metrics import open_sinks
from training.engine.objectives import combine, pair_metrics
from training.engine.optim import lr_factor, step_plan

ADAPTERS = ("m1", "m2")


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
    with autocast(run.collator.device, run.autocast):
        lp = pair_logps(run.model, batch, *ref)
    loss, out = combine(terms, lp)
    return loss, pair_metrics(out, lp, loss)


@dataclass
class Roles:
    """Which adapter is fast, how many steps in a row the slow one has been ahead, swaps so far."""

    fast: str = "m1"
    streak: int = 0
    swaps: int = 0

    @property
    def slow(self) -> str:
        return "m2" if self.fast == "m1" else "m1"

    def after_step(self, loss_fast: float, loss_slow: float, *, patience: int) -> None:
        self.streak = self.streak + 1 if loss_slow < loss_fast else 0
        if should_swap(self.streak, patience=patience):
            self.fast, self.streak, self.swaps = self.slow, 0, self.swaps + 1


def _save(folder: Path, run: Run, optimizer, roles: Roles, step: int) -> Path:
    """A checkpoint in the main loop's layout (both adapter folders ``m1/``, ``m2/``), the roles in its
    resume state, and ``fast_adapter.txt`` naming the final model."""
    folder = save_checkpoint(
        folder,
        model=run.model,
        tokenizer=run.tokenizer,
        optimizer=optimizer,
        scheduler=None,
        step=step,
        extra={"roles": asdict(roles)},
    )
    (folder / "fast_adapter.txt").write_text(roles.fast + "\n")
    return folder


def _restore(folder: Path, run: Run, optimizer) -> tuple[int, Roles]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    for name in ADAPTERS:
        set_peft_model_state_dict(
            run.model, load_file(folder / name / "adapter_model.safetensors"), adapter_name=name
        )
    state = load_state(folder)
    optimizer.load_state_dict(state.optimizer)
    set_rng_state(state.rng)
    return state.step, Roles(**state.extra["roles"])


def train_fast_slow(
    config: FastSlowDPOConfig,
    *,
    callbacks=(),
    should_cancel=None,
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train both adapters; metrics: the fast adapter's TRL metrics, fast/loss, slow/loss, fast_slow/swaps."""
    run = setup_run(replace(config, lora=False))
    run.model = attach_lora(run.model, config, adapter_name="m1")
    run.model.add_adapter("m2", run.model.peft_config["m1"])
    _use(run.model, "m1")
    params = {
        n: [p for k, p in run.model.named_parameters() if "lora_" in k and f".{n}." in k] for n in ADAPTERS
    }
    opt = torch.optim.AdamW(
        [{"params": params["m1"]}, {"params": params["m2"]}],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    out_dir = Path(config.output_dir)
    plan, terms = step_plan(len(run.train_pairs), config), config.objective_terms()
    warmup = round(config.warmup_ratio * len(plan))
    start, roles = 0, Roles()
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        start, roles = _restore(ckpt, run, opt)
    sinks, bar = open_sinks(
        out_dir, callbacks, total=len(plan), start=start, resumed=ckpt is not None, progress=progress
    )
    result = TrainResult("succeeded", start, out_dir, ckpt, dropped=run.dropped)
    for step_idx in range(start, len(plan)):
        step = step_idx + 1
        if should_cancel is not None and should_cancel():
            result.status, result.last_checkpoint = (
                "cancelled",
                _save(out_dir / f"checkpoint-{step_idx}", run, opt, roles, step_idx),
            )
            break
        tick = time.perf_counter()
        factor = lr_factor(step_idx, total=len(plan), warmup=warmup, kind=config.lr_scheduler)
        for i, name in enumerate(ADAPTERS):
            ratio = config.fast_lr_ratio if name == roles.fast else 1.0
            opt.param_groups[i]["lr"] = config.learning_rate * ratio * factor
        positions = [i for mb in plan[step_idx] for i in mb]
        batch = run.collator([run.train_pairs[i] for i in positions])
        ref = (run.train_ref["chosen"][positions], run.train_ref["rejected"][positions])
        loss_f, metrics = _adapter_loss(run, roles.fast, batch, ref, terms)
        loss_s, _ = _adapter_loss(run, roles.slow, batch, ref, terms)
        total = fast_slow_loss(loss_f, loss_s, chase_weight=config.chase_weight)
        check_finite("loss", float(total.detach()), step)
        total.backward()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(params["m1"] + params["m2"], config.max_grad_norm or float("inf"))
        )
        check_finite("grad_norm", grad_norm, step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        lr_fast = opt.param_groups[ADAPTERS.index(roles.fast)]["lr"]
        roles.after_step(float(loss_f.detach()), float(loss_s.detach()), patience=config.swap_patience)
        metrics.update(
            {
                "loss": float(total.detach()),
                "fast/loss": float(loss_f.detach()),
                "slow/loss": float(loss_s.detach()),
                "fast_slow/swaps": float(roles.swaps),
                "grad_norm": grad_norm,
                "learning_rate": lr_fast,
                "throughput/pairs_per_s": len(positions) / (time.perf_counter() - tick),
            }
        )
        if (config.eval_steps and step % config.eval_steps == 0) or step == len(plan):
            result.eval_metrics = _evaluate_fast(run, roles.fast, terms)
            metrics.update(result.eval_metrics)
        for sink in sinks:
            sink.log(metrics, step)
        result.step, result.metrics = step, metrics
        if config.save_steps and step % config.save_steps == 0 and step < len(plan):
            result.last_checkpoint = _save(out_dir / f"checkpoint-{step}", run, opt, roles, step)
    if bar:
        bar.close()
    if result.status == "succeeded":
        result.last_checkpoint = _save(out_dir / f"checkpoint-{result.step}", run, opt, roles, result.step)
    return result


def _evaluate_fast(run: Run, fast: str, terms) -> dict[str, float]:
    _use(run.model, fast)
    return evaluate_run(run, terms)
