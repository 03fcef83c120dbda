"""The ``fast_slow_dpo`` recipe (OFS): two LoRA adapters on one base, two learning rates, a chase term,
a swap rule.

Each step both adapters see the same batch; the loss is ``ℓ_fast + ℓ_slow + λ·|ℓ_fast − ℓ_slow|`` (each ℓ a
DPO loss against the base, i.e. adapters disabled).  When the slow adapter's loss stays below the fast
one's for ``swap_patience`` consecutive steps, the two swap learning rates (roles).  Checkpoints hold both
adapter folders (``m1/``, ``m2/``), ``fast_adapter.txt`` naming the one that is fast, and the roles in the
resume state; evaluation scores the fast adapter, and ``final/`` is the base with the fast adapter merged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from training.engine.lm.lora import attach_lora, merged_with_adapter
from training.engine.lm.models import load_model
from training.engine.recipes.dpo import DPORecipe
from training.engine.recipes.dpo_configs import PreferenceConfig
from training.engine.runtime.config import ConfigError
from training.engine.runtime.recipe import MicroStep

ADAPTERS = ("m1", "m2")
FAST_FILE = "fast_adapter.txt"


@dataclass(frozen=True, kw_only=True)
class FastSlowDPOConfig(PreferenceConfig):
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


class FastSlowDPORecipe(DPORecipe):
    """Two adapters trained on the same batches; metrics are the fast adapter's, plus each one's loss."""

    supports_distributed: ClassVar[bool] = True
    supports_fsdp: ClassVar[bool] = False  # both adapters' weights are switched by name on the peft model

    def __init__(self, config: FastSlowDPOConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.roles = Roles()

    @property
    def trains_adapters(self) -> bool:
        return True

    def wrap_trainable(self, model):
        model = attach_lora(model, self.config, adapter_name=ADAPTERS[0])
        model.add_adapter(ADAPTERS[1], model.peft_config[ADAPTERS[0]])
        self._use(model, ADAPTERS[0])
        return model

    @staticmethod
    def _use(model, name: str) -> None:
        model.set_adapter(name)
        for pname, param in model.named_parameters():
            if "lora_" in pname:
                param.requires_grad_(True)  # keep both adapters trainable (set_adapter freezes the other)

    def param_groups(self) -> list[dict[str, Any]]:
        named = list(self.model.named_parameters())
        return [{"params": [p for k, p in named if "lora_" in k and f".{n}." in k]} for n in ADAPTERS]

    def lr_scales(self) -> list[float]:
        return [self.config.fast_lr_ratio if name == self.roles.fast else 1.0 for name in ADAPTERS]

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        batch = self.collator([self.train_pairs[i] for i in positions])
        self._use(self.model, self.roles.fast)
        loss_fast, metrics = self.pair_loss(batch, positions)
        self._use(self.model, self.roles.slow)
        loss_slow, _ = self.pair_loss(batch, positions)
        if self.dist.active:
            total = self.shared_chase_loss(loss_fast, loss_slow, positions)
        else:
            total = fast_slow_loss(loss_fast, loss_slow, chase_weight=self.config.chase_weight)
        (total * scale).backward()
        metrics.update(
            {
                "loss": float(total.detach()),
                "fast/loss": float(loss_fast.detach()),
                "slow/loss": float(loss_slow.detach()),
            }
        )
        return MicroStep(metrics, len(positions), batch.n_tokens)

    def shared_chase_loss(self, loss_fast: Tensor, loss_slow: Tensor, positions: list[int]) -> Tensor:
        """This rank's part of the whole micro-batch's loss: ``|ℓ_fast − ℓ_slow|`` is not a mean over
        examples, so the ranks agree on the sign of the whole micro-batch's difference and each takes
        ``ℓ_fast + ℓ_slow + λ·sign·(ℓ_fast − ℓ_slow)`` on its share, whose examples-weighted mean (and
        gradient) is the one-process loss."""
        examples = len(self.dist.shard(self.micro_batch)) if self.micro_batch else len(positions)
        gap = float((loss_fast - loss_slow).detach())
        whole, _, _ = self.dist.weighted_means({"gap": gap * examples}, examples, 0)
        sign = (whole["gap"] > 0) - (whole["gap"] < 0)
        return loss_fast + loss_slow + self.config.chase_weight * sign * (loss_fast - loss_slow)

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        self.roles.after_step(metrics["fast/loss"], metrics["slow/loss"], patience=self.config.swap_patience)
        return {"fast_slow/swaps": float(self.roles.swaps)}

    def evaluate(self) -> dict[str, float]:
        self._use(self.model, self.roles.fast)
        return super().evaluate()

    def state_dict(self) -> dict[str, Any]:
        return {"roles": asdict(self.roles)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "roles" in state:
            self.roles = Roles(**state["roles"])

    def save(self, folder: Path) -> None:
        super().save(folder)
        (folder / FAST_FILE).write_text(self.roles.fast + "\n")

    def load(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        for name in ADAPTERS:
            weights = load_file(folder / name / "adapter_model.safetensors")
            set_peft_model_state_dict(self.model, weights, adapter_name=name)

    def export_final(self, checkpoint: Path, folder: Path) -> None:
        """The base with the adapter that was fast at the checkpoint merged in."""
        fast = (checkpoint / FAST_FILE).read_text().strip()
        merged = merged_with_adapter(load_model(self.config.model), checkpoint / fast)
        merged.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
