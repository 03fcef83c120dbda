"""The ``rto`` recipe (Zhong et al., "DPO Meets PPO: Reinforced Token Optimization"): PPO whose rewards are
dense, from a finished DPO model.

Each response token ``t`` earns ``β₁·clip(log π_dpo − log π_dpo_ref, ±c)`` (the DPO model's implicit reward
at that token, ``lm/logps.implicit_token_rewards``, the quantity the evaluation page draws as a heatmap)
minus ``β₂·(log π_θ − log π_ref)``, and the last token also ``β₃`` times the reward-model score.  The rest
is the ``ppo`` recipe: rollouts, GAE, clipped losses, value model from the reward model.  The paper does not
fix the clip bound; ``dpo_logratio_clip`` is a setting (default ±5 nats per token, wider than any log-ratio
a DPO run on a small model reaches in our runs, so it only guards against outliers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from training.engine.lm.logps import implicit_token_rewards
from training.engine.lm.models import ModelSpec, load_model
from training.engine.lm.rollout import Batch, response_logprobs
from training.engine.recipes.ppo import PPOConfig, PPORecipe, frozen
from training.engine.runtime.config import ConfigError, require, require_positive


@dataclass(frozen=True, kw_only=True)
class RTOConfig(PPOConfig):
    """RTO: PPO with the DPO model's token-level implicit reward as a dense reward."""

    method: ClassVar[str] = "rto"

    dpo_model: str
    """The finished DPO model whose implicit reward scores every token (``local:PATH``)."""
    dpo_reference: str | None = None
    """The DPO run's reference model; None = ``model`` (RTO starts the policy from the DPO reference)."""
    dpo_beta: float = 0.05
    """β₁: weight of the DPO token reward."""
    dpo_logratio_clip: float | None = 5.0
    """Clip each token's log π_dpo − log π_ref to ±this before weighting (None = no clip)."""
    kl_coef: float = 0.01
    """β₂ of the per-token KL penalty to the policy's reference."""
    score_coef: float = 1.0
    """β₃: weight of the reward-model score at the last token (0 = token rewards alone)."""

    def __post_init__(self) -> None:
        for name in ("dpo_model", "dpo_reference"):
            value = getattr(self, name)
            if value is None and name == "dpo_reference":
                continue
            try:
                ModelSpec.parse(value)
            except (ValueError, AttributeError) as exc:
                raise ConfigError(f"{name}: {exc}") from exc
        super().__post_init__()
        require_positive(self.dpo_beta, "dpo_beta")
        require_positive(self.dpo_logratio_clip, "dpo_logratio_clip", allow_none=True)
        require(self.score_coef >= 0, "score_coef", f"must be ≥ 0, got {self.score_coef!r}")


class RTORecipe(PPORecipe):
    """PPO with RTO's dense token rewards from a DPO model."""

    def setup_token_rewards(self) -> None:
        config = self.config
        self.check_tokenizer(config.dpo_model, "dpo_model")
        self.dpo_model = frozen(load_model(config.dpo_model).to(self.device))
        reference = config.dpo_reference
        if reference is None or reference == config.model:
            self.dpo_reference = None  # the policy's own reference
        else:
            self.check_tokenizer(reference, "dpo_reference")
            self.dpo_reference = frozen(load_model(reference).to(self.device))

    @property
    def score_weight(self) -> float:  # type: ignore[override]
        return self.config.score_coef

    @torch.no_grad()
    def dense_token_rewards(self, batch: Batch) -> Tensor:
        dpo = response_logprobs(self.dpo_model, batch)[0]
        if self.dpo_reference is None:
            ref = self.reference_logprobs(batch, 1.0)
        else:
            ref = response_logprobs(self.dpo_reference, batch)[0]
        config = self.config
        rewards = implicit_token_rewards(dpo, ref, beta=config.dpo_beta, clip=config.dpo_logratio_clip)
        return rewards * batch.response_mask
