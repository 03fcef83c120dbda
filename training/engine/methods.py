"""One config class per pairwise method; each registers itself in ``config.METHODS`` under ``method``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from training.engine.config import TrainConfig, register_method, require, require_positive
from training.engine.objectives import LossTerm


@register_method
@dataclass(frozen=True, kw_only=True)
class DPOConfig(TrainConfig):
    """DPO (sigmoid loss)."""

    method: ClassVar[str] = "dpo"


@register_method
@dataclass(frozen=True, kw_only=True)
class StepDPOConfig(TrainConfig):
    """Step-DPO: DPO on the step's tokens (rows carry ``initial_reason_steps``)."""

    method: ClassVar[str] = "step_dpo"
    beta: float = 0.4
    """Step-DPO's authors use β 0.4–0.5."""
    lr_scheduler: str = "cosine"
    """Step-DPO's authors use cosine."""


@register_method
@dataclass(frozen=True, kw_only=True)
class MaskDPOConfig(TrainConfig):
    """Mask-DPO: DPO on factual chosen sentences and hallucinated rejected sentences."""

    method: ClassVar[str] = "mask_dpo"


@register_method
@dataclass(frozen=True, kw_only=True)
class CDPOConfig(TrainConfig):
    """Conservative DPO (label smoothing)."""

    method: ClassVar[str] = "cdpo"
    epsilon: float = 0.1
    """Label-smoothing ε in [0, 0.5)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.epsilon < 0.5, "epsilon", f"must lie in [0, 0.5), got {self.epsilon}")

    def main_term(self) -> LossTerm:
        return LossTerm(self.method, 1.0, {"beta": self.beta, "epsilon": self.epsilon})


@register_method
@dataclass(frozen=True, kw_only=True)
class RDPOConfig(CDPOConfig):
    """Robust DPO; ε = the dataset's estimated label-flip rate."""

    method: ClassVar[str] = "rdpo"


@register_method
@dataclass(frozen=True, kw_only=True)
class IPOConfig(TrainConfig):
    """IPO on length-averaged log-ratios."""

    method: ClassVar[str] = "ipo"
    tau: float = 0.1
    """IPO's τ: the target margin is 1/(2τ)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.tau, "tau")

    def main_term(self) -> LossTerm:
        return LossTerm("ipo", 1.0, {"tau": self.tau, "beta": self.beta})


@register_method
@dataclass(frozen=True, kw_only=True)
class HingeConfig(TrainConfig):
    """SLiC / RSO hinge loss."""

    method: ClassVar[str] = "hinge"
    gamma: float = 0.05
    """Scale γ of the margin inside max(0, 1 − γh)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.gamma, "gamma")

    def main_term(self) -> LossTerm:
        return LossTerm(self.method, 1.0, {"gamma": self.gamma, "beta": self.beta})


@register_method
@dataclass(frozen=True, kw_only=True)
class SigmoidNormConfig(HingeConfig):
    """RSO sigmoid-norm loss."""

    method: ClassVar[str] = "sigmoid_norm"


@register_method
@dataclass(frozen=True, kw_only=True)
class FlexConfig(TrainConfig):
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
