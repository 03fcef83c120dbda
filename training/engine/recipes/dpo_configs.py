"""The configs of the pairwise preference methods the ``dpo`` recipe trains (one frozen dataclass each).

``PreferenceConfig`` holds what every preference method on a causal LM shares (the model, the reward
temperature, LoRA, truncation and packing); each method adds its objective's parameters and names its
main loss term (``objectives/preference.py``).  ``docs/methods.md`` describes each method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from training.engine.lm.models import ModelSpec
from training.engine.objectives.preference import LossTerm
from training.engine.runtime.config import (
    ConfigError,
    RunConfig,
    require,
    require_fraction,
    require_positive,
)


def check_text_pair_fields(config, run_checks) -> None:
    """What every config over packed text pairs checks: its model spec (first, so a bad spec is named
    before anything else), then ``run_checks()`` (the RunConfig fields), the truncation and packing
    bounds and the export's format."""
    try:
        ModelSpec.parse(config.model)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from exc
    run_checks()
    for name in ("max_length", "token_budget"):
        require_positive(getattr(config, name), name, integer=True, allow_none=True)
    require(
        Path(config.train_file).suffix in {".jsonl", ".json", ".parquet"}, "train_file", "JSONL or Parquet"
    )


@dataclass(frozen=True, kw_only=True)
class LoraFields:
    """LoRA settings of a recipe that trains a causal LM (``lm/lora.py``)."""

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

    def check_lora(self) -> None:
        require_positive(self.lora_alpha, "lora_alpha")
        require_positive(self.lora_r, "lora_r", integer=True)
        require_fraction(self.lora_dropout, "lora_dropout")


@dataclass(frozen=True, kw_only=True)
class PreferenceConfig(LoraFields, RunConfig):
    """Settings shared by every preference method on a causal LM."""

    model: str
    """Model spec: ``bundled``, ``local:PATH`` (or a path), ``hub:ORG/NAME``, ``tiny[:opts]`` (lm/models)."""
    train_file: str
    """Exported dataset (JSONL or Parquet, TRL preference rows); rows with ``split`` = test held out."""
    beta: float = 0.1
    """Temperature β of the implicit reward (also used for the reported rewards)."""
    sft_weight: float = 0.0
    """α of the SFT add-on term −α·logp(y_w)/|y_w| (0 = off)."""
    extra_losses: tuple[dict, ...] = ()
    """Further weighted terms: ``{"name": ..., "weight": ..., "params": {...}}`` (objectives registry)."""
    max_length: int | None = 512
    """Cap on prompt+response tokens per side (keep-start truncation); None = no cap."""
    token_budget: int | None = None
    """Most tokens in one packed row; None = the whole micro-batch in one row."""
    ref_cache_dir: str | None = None
    """Reference log-prob cache; None = $REF_CACHE or <repo>/var/ref_cache."""
    reference_model: str | None = None
    """The reference's model spec when it is not the starting weights (an online loop keeping its first
    policy as every round's reference); it must share the model's tokenizer.  None = the starting weights."""

    def __post_init__(self) -> None:
        check_text_pair_fields(self, super().__post_init__)
        require_positive(self.beta, "beta")
        require(
            self.reference_model is None
            or (isinstance(self.reference_model, str) and self.reference_model.strip()),
            "reference_model",
            f"must be a model spec or none, got {self.reference_model!r}",
        )
        self.check_lora()
        require(self.sft_weight >= 0, "sft_weight", f"must be ≥ 0, got {self.sft_weight}")
        for i, term in enumerate(self.extra_losses):
            require(isinstance(term, dict) and "name" in term, f"extra_losses[{i}]", "needs a 'name'")
            try:
                LossTerm(term["name"], float(term.get("weight", 1.0)), dict(term.get("params", {})))
            except ValueError as exc:
                raise ConfigError(f"extra_losses[{i}]: {exc}") from exc

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


@dataclass(frozen=True, kw_only=True)
class DPOConfig(PreferenceConfig):
    """DPO (sigmoid loss)."""

    method: ClassVar[str] = "dpo"


@dataclass(frozen=True, kw_only=True)
class StepDPOConfig(PreferenceConfig):
    """Step-DPO: DPO on the step's tokens (rows carry ``initial_reason_steps``)."""

    method: ClassVar[str] = "step_dpo"
    beta: float = 0.4
    """Step-DPO's authors use β 0.4–0.5."""
    lr_scheduler: str = "cosine"
    """Step-DPO's authors use cosine."""


@dataclass(frozen=True, kw_only=True)
class MaskDPOConfig(PreferenceConfig):
    """Mask-DPO: DPO on factual chosen sentences and hallucinated rejected sentences."""

    method: ClassVar[str] = "mask_dpo"


@dataclass(frozen=True, kw_only=True)
class CDPOConfig(PreferenceConfig):
    """Conservative DPO (label smoothing)."""

    method: ClassVar[str] = "cdpo"
    epsilon: float = 0.1
    """Label-smoothing ε in [0, 0.5)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.epsilon < 0.5, "epsilon", f"must lie in [0, 0.5), got {self.epsilon}")

    def main_term(self) -> LossTerm:
        return LossTerm(self.method, 1.0, {"beta": self.beta, "epsilon": self.epsilon})


@dataclass(frozen=True, kw_only=True)
class RDPOConfig(CDPOConfig):
    """Robust DPO; ε = the dataset's estimated label-flip rate."""

    method: ClassVar[str] = "rdpo"


@dataclass(frozen=True, kw_only=True)
class CREAMConfig(PreferenceConfig):
    """CREAM: DPO weighted by each pair's self-consistency C (the loop's CREAM labeller writes C per row)."""

    method: ClassVar[str] = "cream"

    def main_term(self) -> LossTerm:
        return LossTerm(self.method, 1.0, {"beta": self.beta})


@dataclass(frozen=True, kw_only=True)
class IPOConfig(PreferenceConfig):
    """IPO on length-averaged log-ratios."""

    method: ClassVar[str] = "ipo"
    tau: float = 0.1
    """IPO's τ: the target margin is 1/(2τ)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.tau, "tau")

    def main_term(self) -> LossTerm:
        return LossTerm("ipo", 1.0, {"tau": self.tau, "beta": self.beta})


@dataclass(frozen=True, kw_only=True)
class HingeConfig(PreferenceConfig):
    """SLiC / RSO hinge loss."""

    method: ClassVar[str] = "hinge"
    gamma: float = 0.05
    """Scale γ of the margin inside max(0, 1 − γh)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.gamma, "gamma")

    def main_term(self) -> LossTerm:
        return LossTerm(self.method, 1.0, {"gamma": self.gamma, "beta": self.beta})


@dataclass(frozen=True, kw_only=True)
class SigmoidNormConfig(HingeConfig):
    """RSO sigmoid-norm loss."""

    method: ClassVar[str] = "sigmoid_norm"


@dataclass(frozen=True, kw_only=True)
class FlexConfig(PreferenceConfig):
    """Flex DPO (3D-properties): separate temperatures for chosen and rejected."""

    method: ClassVar[str] = "flex"
    beta_pos: float = 0.1
    """β⁺ on the chosen log-ratio."""
    beta_neg: float = 0.08
    """β⁻ on the rejected log-ratio."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.beta_pos, "beta_pos")
        require_positive(self.beta_neg, "beta_neg")

    def main_term(self) -> LossTerm:
        return LossTerm("flex", 1.0, {"beta_pos": self.beta_pos, "beta_neg": self.beta_neg})
