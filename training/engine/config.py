"""Training configs: frozen dataclasses, one per method, validated on construction.

The web app builds these from a form and stores ``asdict(config)``; ``config_from_dict`` rebuilds them
(``method`` picks the class).  Every bad field raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from training.engine.device import DEVICE_PATTERN
from training.engine.models import ModelSpec
from training.engine.objectives import LossTerm


class ConfigError(ValueError):
    """A config field has a bad value; the message names the field."""


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


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings shared by every preference method."""

    method: ClassVar[str] = "base"

    model: str
    """Model spec: ``bundled``, ``local:PATH`` (or a path), ``hub:ORG/NAME``, ``tiny[:opts]`` (models.py)."""
    train_file: str
    """Exported dataset (JSONL or Parquet, TRL preference rows); rows with ``split`` = test are held out."""
    output_dir: str
    """Where metrics.jsonl, checkpoint-N/ folders and final/ are written."""
    eval_file: str | None = None
    """Held-out file; None = the ``split: test`` rows of ``train_file``."""
    beta: float = 0.1
    """Temperature β of the implicit reward (also used for the reported rewards)."""
    sft_weight: float = 0.0
    """α of the SFT add-on term −α·logp(y_w)/|y_w| (0 = off)."""
    extra_losses: tuple[dict, ...] = ()
    """Further weighted terms: ``{"name": ..., "weight": ..., "params": {...}}`` (objectives registry)."""
    lora: bool = False
    """Train a LoRA adapter (reference = adapter disabled) instead of all weights."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names that receive adapters."""
    max_length: int | None = 512
    """Cap on prompt+response tokens per side (keep-start truncation); None = no cap."""
    batch_size: int = 8
    """Pairs per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    token_budget: int | None = None
    """Most tokens in one packed row; None = the whole micro-batch in one row."""
    epochs: int = 1
    """Passes over the training pairs."""
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
    """Seeds weights init (tiny), data order, dropout."""
    shuffle: bool = True
    """Shuffle the training pairs every epoch (seeded)."""
    logging_steps: int = 1
    """Report train metrics every N optimizer steps."""
    eval_steps: int | None = None
    """Evaluate on held-out pairs every N steps (and at the end); None = only at the end."""
    save_steps: int | None = None
    """Write checkpoint-N every N steps (the final model is always written)."""
    save_final: bool = True
    """Write checkpoint-N at the last step (turn off only for benchmarks)."""
    ref_cache_dir: str | None = None
    """Reference log-prob cache; None = $REF_CACHE or <repo>/var/ref_cache."""

    def __post_init__(self) -> None:
        self._validate_common()
        for i, term in enumerate(self.extra_losses):
            require(isinstance(term, dict) and "name" in term, f"extra_losses[{i}]", "needs a 'name'")
            try:
                LossTerm(term["name"], float(term.get("weight", 1.0)), dict(term.get("params", {})))
            except ValueError as exc:
                raise ConfigError(f"extra_losses[{i}]: {exc}") from exc

    def _validate_common(self) -> None:
        try:
            ModelSpec.parse(self.model)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from exc
        for name in ("train_file", "output_dir"):
            require(
                isinstance(getattr(self, name), str) and getattr(self, name), name, "must be a non-empty path"
            )
        for name in ("beta", "learning_rate", "adam_epsilon", "lora_alpha"):
            require_positive(getattr(self, name), name)
        for name in ("batch_size", "gradient_accumulation_steps", "epochs", "lora_r", "logging_steps"):
            require_positive(getattr(self, name), name, integer=True)
        for name in ("max_length", "token_budget", "max_steps", "eval_steps", "save_steps"):
            require_positive(getattr(self, name), name, integer=True, allow_none=True)
        require_positive(self.max_grad_norm, "max_grad_norm", allow_none=True)
        for name in ("adam_beta1", "adam_beta2", "warmup_ratio", "lora_dropout"):
            value = getattr(self, name)
            require(
                isinstance(value, (int, float)) and 0 <= value < 1, name, f"must lie in [0, 1), got {value!r}"
            )
        require(self.weight_decay >= 0, "weight_decay", f"must be ≥ 0, got {self.weight_decay}")
        require(self.sft_weight >= 0, "sft_weight", f"must be ≥ 0, got {self.sft_weight}")
        require(
            self.lr_scheduler in {"constant", "linear", "cosine"},
            "lr_scheduler",
            "constant, linear or cosine",
        )
        require(self.precision in {"fp32", "bf16"}, "precision", f"fp32 or bf16, got {self.precision!r}")
        require(
            isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device) is not None,
            "device",
            f"auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        require(
            Path(self.train_file).suffix in {".jsonl", ".json", ".parquet"}, "train_file", "JSONL or Parquet"
        )

    def objective_terms(self) -> list[LossTerm]:
        """The method's main term, then the SFT add-on and extra terms."""
        terms = [self.main_term()]
        if self.sft_weight > 0:
            terms.append(LossTerm("sft", self.sft_weight))
        terms += [
            LossTerm(t["name"], float(t.get("weight", 1.0)), dict(t.get("params", {})))
            for t in self.extra_losses
        ]
        return terms

    def main_term(self) -> LossTerm:
        return LossTerm("dpo", 1.0, {"beta": self.beta})


METHODS: dict[str, type[TrainConfig]] = {}


def register_method(cls: type[TrainConfig]) -> type[TrainConfig]:
    METHODS[cls.method] = cls
    return cls


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build the config of ``data["method"]``; unknown or missing fields raise ConfigError."""
    import training.engine.api  # noqa: F401 - registers every method (methods.py, curriculum, fastslow)

    data = dict(data)
    method = data.pop("method", "dpo")
    if method not in METHODS:
        raise ConfigError(f"method: unknown {method!r}; choose from {sorted(METHODS)}")
    cls = METHODS[method]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field for method {method} (unknown: {unknown})")
    for name, value in data.items():
        if isinstance(value, list):
            data[name] = tuple(value)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"config for {method}: {exc}") from exc


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """``asdict`` plus the method name: what the web app stores and ``config_from_dict`` reads."""
    return {"method": config.method, **dataclasses.asdict(config)}


def load_config(path: str | Path) -> TrainConfig:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields")
    return config_from_dict(data)
