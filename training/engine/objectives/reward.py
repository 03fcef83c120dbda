"""The Bradley-Terry reward-model objective (EXRM): pure functions of the two responses' scalar rewards.

``loss = −log σ(r(y_w) − r(y_l) − m)``, with an optional per-pair margin m (0 by default), as TRL's
``RewardTrainer`` computes it (``docs/methods.md``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bradley_terry_losses(chosen: Tensor, rejected: Tensor, margin: Tensor | None = None) -> Tensor:
    """Per-pair losses ``[B]`` from the rewards ``[B]`` of chosen and rejected (float32, by logsigmoid)."""
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin.float()
    return -F.logsigmoid(diff)


def reward_metrics(chosen: Tensor, rejected: Tensor, loss: Tensor, prefix: str = "") -> dict[str, float]:
    """``loss``, ``accuracy`` (share of pairs with r_w > r_l; ties ½), ``margin`` (mean r_w − r_l) and the
    mean/std/min/max of each side's rewards, under ``prefix``."""
    c, r = chosen.detach().float(), rejected.detach().float()
    diff = c - r
    out = {
        "loss": float(loss.detach()),
        "accuracy": float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()),
        "margin": float(diff.mean()),
    }
    for side, values in (("chosen", c), ("rejected", r)):
        out[f"rewards/{side}_mean"] = float(values.mean())
        out[f"rewards/{side}_std"] = float(values.std(unbiased=False))
        out[f"rewards/{side}_min"] = float(values.min())
        out[f"rewards/{side}_max"] = float(values.max())
    return {prefix + k: v for k, v in out.items()}
