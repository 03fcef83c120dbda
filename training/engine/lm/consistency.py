"""CREAM's labeller arithmetic (Wang et al., consistency-regularised self-rewarding): pure functions.

Each round samples several responses per prompt and ranks them twice, by the current model's implicit reward
and by the previous round's; how far the two rankings agree is the pair's consistency
``C = (τ + 1) / 2`` with Kendall's τ-b, which the ``cream`` objective uses to weigh the pair's two directions
(``objectives/preference.py``).  The implicit reward is DPO's ρ(y) = log π(y) − log π_ref(y) without β: β
scales every reward of a ranking alike, so it changes no order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.engine.lm.rollout import Batch, response_logprobs


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b of two scorings of the same items: (concordant − discordant) pairs over
    √(pairs untied in a · pairs untied in b), so ties count in neither; 0.0 when there are fewer than two
    items or either side ties everything.  Raises ValueError on unequal lengths or a non-finite value."""
    if len(a) != len(b):
        raise ValueError(f"kendall_tau: {len(a)} scores against {len(b)}")
    if not all(math.isfinite(x) for x in (*a, *b)):
        raise ValueError("kendall_tau: scores must be finite numbers")
    balance = untied_a = untied_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sa, sb = _sign(a[i] - a[j]), _sign(b[i] - b[j])
            balance += sa * sb
            untied_a += sa != 0
            untied_b += sb != 0
    if untied_a == 0 or untied_b == 0:
        return 0.0
    return balance / math.sqrt(untied_a * untied_b)


def consistency(a: Sequence[float], b: Sequence[float]) -> float:
    """CREAM's consistency of two rankings, ``(τ_b + 1) / 2`` in [0, 1]: 1 for the same order, 0 for the
    reverse, ½ when either side is all ties (no information)."""
    return (kendall_tau(a, b) + 1.0) / 2.0


def _sequence_logps(model: nn.Module, batch: Batch) -> Tensor:
    logps = response_logprobs(model, batch)[0]
    return (logps * batch.response_mask).sum(dim=1)


@torch.no_grad()
def implicit_rewards(policy: nn.Module, reference: nn.Module | None, batch: Batch) -> Tensor:
    """``[B]``: each response's implicit reward Σ_t (log π_policy − log π_reference) over its own tokens
    (``batch.response_mask``), without β.  ``reference=None`` gives the policy's sequence log-likelihood
    Σ_t log π_policy instead: CREAM's first round, whose model has no distinct reference to rank against.
    No gradients; the models are used in whatever mode (train or eval) the caller left them."""
    rewards = _sequence_logps(policy, batch)
    if reference is not None:
        rewards = rewards - _sequence_logps(reference, batch).to(rewards.device)
    return rewards
