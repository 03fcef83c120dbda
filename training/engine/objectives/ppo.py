"""PPO's arithmetic on a rollout batch: KL-penalised token rewards, GAE, whitening, the clipped losses and
the adaptive KL coefficient (``../docs/methods.md``, "PPO"; TRL's ``PPOTrainer`` is the naming reference).

Every tensor is ``[B, T]`` over response tokens with a boolean ``mask`` of the tokens a response really
has (up to and including its EOS).  The value ``V_t`` is the value model's estimate of the state before
response token ``t``; the episode ends after the last real token, so ``V_{end+1} = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance over the masked entries (0 when fewer than two)."""
    n = mask.sum()
    mean = masked_mean(values, mask)
    squares = (((values - mean) ** 2) * mask).sum()
    return squares / (n - 1).clamp(min=1)


def whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True) -> Tensor:
    """Zero mean (unless ``shift_mean`` is off), unit variance over the masked entries; 0 outside them."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def last_token_index(mask: Tensor) -> Tensor:
    """``[B]``: position of each response's last real token (0 for an empty response)."""
    return (mask.long().sum(dim=1) - 1).clamp(min=0)


def kl_penalised_rewards(
    logprobs: Tensor, ref_logprobs: Tensor, scores: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """Token rewards ``−kl_coef·(log π − log π_ref)`` with the sequence score added at the last real token;
    returns ``(rewards, non_score_rewards)``."""
    kl = (logprobs - ref_logprobs) * mask
    non_score = -kl_coef * kl
    rewards = non_score.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype) * mask.any(dim=1)
    return rewards, non_score


def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and returns (``advantages + values``), 0 past each response's end."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class PPOLosses:
    """One mini-batch's losses and the statistics TRL logs for them."""

    loss: Tensor
    policy: Tensor
    value: Tensor
    stats: dict[str, float]


def ppo_losses(
    *,
    new_logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
    entropy: Tensor | None = None,
) -> PPOLosses:
    """The clipped surrogate policy loss, the clipped value loss (½·max of the squared errors) and their
    sum ``policy + vf_coef·value``, as means over the mask."""
    clipped_values = old_values + (new_values - old_values).clamp(-cliprange_value, cliprange_value)
    value_errors = torch.maximum((new_values - returns) ** 2, (clipped_values - returns) ** 2)
    value_loss = 0.5 * masked_mean(value_errors, mask)
    value_clipped = masked_mean(((clipped_values - returns) ** 2 > (new_values - returns) ** 2).float(), mask)

    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    surrogate = -advantages * ratio
    surrogate_clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    policy_loss = masked_mean(torch.maximum(surrogate, surrogate_clipped), mask)
    policy_clipped = masked_mean((surrogate_clipped > surrogate).float(), mask)
    loss = policy_loss + vf_coef * value_loss
    with torch.no_grad():
        stats = {
            "policy/approxkl_avg": float(0.5 * masked_mean(log_ratio**2, mask)),
            "policy/clipfrac_avg": float(policy_clipped),
            "loss/policy_avg": float(policy_loss),
            "loss/value_avg": float(value_loss),
            "val/clipfrac_avg": float(value_clipped),
            "val/ratio": float(masked_mean(ratio, mask)),
        }
        if entropy is not None:
            stats["policy/entropy_avg"] = float(masked_mean(entropy, mask))
    return PPOLosses(loss, policy_loss, value_loss, stats)


class KLController:
    """The KL coefficient: fixed, or adapted towards ``target`` (Ziegler et al. 2019): after each rollout
    batch of ``n`` sequences, ``coef ← coef·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon)``."""

    def __init__(self, coef: float, *, target: float | None = None, horizon: int = 10_000) -> None:
        self.value, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon
