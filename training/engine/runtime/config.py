"""The settings every recipe shares: where the run writes, the step plan, the optimizer, cadence, device.

Configs are frozen dataclasses validated on construction; every bad field raises ``ConfigError`` naming the
field.  A recipe's config subclasses ``RunConfig`` and adds its own fields (``recipes/dpo_configs.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from training.engine.runtime.device import DEVICE_PATTERN
from training.engine.runtime.sharding import FSDP_WRAPS, SHARDINGS, STRATEGIES


class ConfigError(ValueError):
    """A config field has a bad value; the message names the field."""


MAX_EPOCHS = 1000
"""The most epochs of a run without ``max_steps``."""
MAX_STEPS = 10_000_000
"""The most optimizer steps a run may plan (and the cap on every step count and cadence): a plan past it
would take years, and a job row's ``total_steps`` must hold it."""
MAX_BATCH = 65_536
"""The most examples per micro-batch, and micro-batches per optimizer step."""
MAX_SEED = 2**32 - 1
MAX_PROCESSES = 64
"""The most training processes per node (a node with more GPUs than this is not a node we have seen)."""
MAX_NODES = 256


def require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def require_positive(value: Any, name: str, *, allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    require(
        isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
        name,
        f"must be a positive {'integer' if integer else 'number'}, got {value!r}",
    )


def require_at_most(value: Any, name: str, limit: int) -> None:
    """For a value already known to be a number (or None): at most ``limit``."""
    require(value is None or value <= limit, name, f"must be at most {limit:,}, got {value!r}")


def require_fraction(value: Any, name: str) -> None:
    require(isinstance(value, (int, float)) and 0 <= value < 1, name, f"must lie in [0, 1), got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings the runtime reads: data and output locations, the step plan, AdamW and its schedule,
    clipping, precision, device, seed and the logging, evaluation and checkpoint cadence."""

    method: ClassVar[str] = "base"

    model: str
    """The model to start from (each recipe says which specs it loads; causal LMs: ``lm/models.py``)."""
    train_file: str
    """Exported dataset file; rows with ``split`` = test are held out."""
    output_dir: str
    """Where metrics.jsonl, checkpoint-N/ folders and final/ are written."""
    eval_file: str | None = None
    """Held-out file; None = the ``split: test`` rows of ``train_file``."""
    batch_size: int = 8
    """Examples per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    epochs: int = 1
    """Passes over the training examples."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (None = run all epochs)."""
    learning_rate: float = 5e-7
    """AdamW peak learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    adam_beta1: float = 0.9
    """AdamW β1."""
    adam_beta2: float = 0.999
    """AdamW β2."""
    adam_epsilon: float = 1e-8
    """AdamW ε."""
    lr_scheduler: str = "linear"
    """constant, linear or cosine decay after warmup."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming up linearly from 0."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (None = no clipping; the norm is still logged)."""
    precision: str = "fp32"
    """fp32, or bf16 (autocast of the forward; weights and optimizer stay fp32)."""
    device: str = "auto"
    """auto (CUDA when the machine has it, else CPU), cpu, cuda or cuda:N."""
    seed: int = 42
    """Seeds weights init, data order, dropout."""
    shuffle: bool = True
    """Shuffle the training examples every epoch (seeded)."""
    logging_steps: int = 1
    """Report train metrics every N optimizer steps."""
    eval_steps: int | None = None
    """Evaluate on held-out examples every N steps (and at the end); None = only at the end."""
    save_steps: int | None = None
    """Write checkpoint-N every N steps (the final model is always written)."""
    save_final: bool = True
    """Write checkpoint-N and final/ at the last step (turn off only for benchmarks)."""
    keep_checkpoints: int | None = 2
    """Keep the newest K checkpoint folders: older ones are deleted after each new checkpoint is in place
    (the one a resume reads and final/ are never deleted). None = keep every one."""
    processes_per_node: int = 1
    """Training processes the studio's worker starts (torchrun --nproc-per-node): the global batch stays
    batch_size × gradient_accumulation_steps, split across them. The engine itself trains on whatever
    world torchrun gives it, so the same file runs alone or under torchrun."""
    nodes: int = 1
    """Machines the job's processes run on (torchrun --nnodes, meeting by c10d rendezvous); each runs
    processes_per_node of them."""
    strategy: str = "ddp"
    """How more than one process shares the model: ddp (each holds all of it and the gradients are
    averaged) or fsdp (weights, gradients and optimizer state sharded, one unit per decoder layer)."""
    fsdp_sharding: str = "full"
    """With fsdp: full (a layer's weights are gathered for its forward and freed after it, ZeRO-3) or
    grad_op (kept from forward to backward, ZeRO-2: more memory, less communication)."""
    fsdp_wrap: str = "layer"
    """With fsdp, the units sharded and gathered one at a time: layer (each decoder layer, plus the rest as
    the root unit: the least memory) or model (the whole model as one unit: fewest collectives, for a
    model whose unsharded weights fit)."""

    def __post_init__(self) -> None:
        for name in ("model", "train_file", "output_dir"):
            value = getattr(self, name)
            require(isinstance(value, str) and value.strip() != "", name, "must be a non-empty string")
        for name in ("learning_rate", "adam_epsilon"):
            require_positive(getattr(self, name), name)
        self._check_counts()
        require_positive(self.max_grad_norm, "max_grad_norm", allow_none=True)
        for name in ("adam_beta1", "adam_beta2", "warmup_ratio"):
            require_fraction(getattr(self, name), name)
        require(
            isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay),
            "weight_decay",
            f"must be a number, got {self.weight_decay!r}",
        )
        require(self.weight_decay >= 0, "weight_decay", f"must be ≥ 0, got {self.weight_decay}")
        require(
            self.lr_scheduler in {"constant", "linear", "cosine"},
            "lr_scheduler",
            "constant, linear or cosine",
        )
        require(self.strategy in STRATEGIES, "strategy", f"ddp or fsdp, got {self.strategy!r}")
        require(
            self.fsdp_sharding in SHARDINGS, "fsdp_sharding", f"full or grad_op, got {self.fsdp_sharding!r}"
        )
        require(self.fsdp_wrap in FSDP_WRAPS, "fsdp_wrap", f"layer or model, got {self.fsdp_wrap!r}")
        require(self.precision in {"fp32", "bf16"}, "precision", f"fp32 or bf16, got {self.precision!r}")
        require(
            isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device) is not None,
            "device",
            f"auto, cpu, cuda or cuda:N, got {self.device!r}",
        )

    def _check_counts(self) -> None:
        """Step counts, cadences, batch sizes and the seed: whole numbers within bounds."""
        limits = {"epochs": None if self.max_steps else MAX_EPOCHS, "logging_steps": MAX_STEPS}
        limits.update(batch_size=MAX_BATCH, gradient_accumulation_steps=MAX_BATCH)
        limits.update(processes_per_node=MAX_PROCESSES, nodes=MAX_NODES)
        for name, limit in limits.items():
            require_positive(getattr(self, name), name, integer=True)
            if limit is not None:  # with max_steps, later epochs are never planned: any count is harmless
                require_at_most(getattr(self, name), name, limit)
        for name in ("max_steps", "eval_steps", "save_steps", "keep_checkpoints"):
            require_positive(getattr(self, name), name, integer=True, allow_none=True)
            require_at_most(getattr(self, name), name, MAX_STEPS)
        require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED,
            "seed",
            f"must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}",
        )
