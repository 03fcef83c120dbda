"""Pairwise preference objectives: pure functions of log-probs, one registry, combinable with weights.

Every objective takes sequence-level log-probs of the chosen (``w``) and rejected (``l``) responses under
the policy and the reference, shape ``[B]``, and returns per-pair losses ``[B]`` plus the implicit rewards
it uses.  Notation follows docs/methods.md: ``ρ(y) = logp_θ(y) − logp_ref(y)``, ``h = ρ(y_w) − ρ(y_l)``.
Step-DPO and Mask-DPO are ``dpo`` on log-probs summed under their token masks (see ``data.py``).
A per-pair value a row carries (CREAM's consistency C) travels in ``PairLogps`` next to the log-probs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class PairLogps(NamedTuple):
    """Sequence log-probs of a batch of pairs, each ``[B]``; lengths are (weighted) response token counts;
    ``consistency`` is each pair's C in [0, 1] (the rows' ``consistency`` field; None = 1 for every pair)."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    chosen_len: Tensor
    rejected_len: Tensor
    consistency: Tensor | None = None


class ObjectiveOutput(NamedTuple):
    """Per-pair losses and the implicit rewards of chosen and rejected, each ``[B]``."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def _ratios(lp: PairLogps) -> tuple[Tensor, Tensor]:
    return lp.policy_chosen - lp.ref_chosen, lp.policy_rejected - lp.ref_rejected


def dpo_loss(lp: PairLogps, *, beta: float = 0.1) -> ObjectiveOutput:
    """DPO (sigmoid): ``−log σ(β h)``."""
    rw, rl = _ratios(lp)
    return ObjectiveOutput(-F.logsigmoid(beta * (rw - rl)), beta * rw.detach(), beta * rl.detach())


def cdpo_loss(lp: PairLogps, *, beta: float = 0.1, epsilon: float = 0.1) -> ObjectiveOutput:
    """Conservative DPO (label smoothing): ``(1−ε)(−log σ(βh)) + ε(−log σ(−βh))``."""
    rw, rl = _ratios(lp)
    z = beta * (rw - rl)
    losses = -(1 - epsilon) * F.logsigmoid(z) - epsilon * F.logsigmoid(-z)
    return ObjectiveOutput(losses, beta * rw.detach(), beta * rl.detach())


def rdpo_loss(lp: PairLogps, *, beta: float = 0.1, epsilon: float = 0.1) -> ObjectiveOutput:
    """Robust DPO, unbiased under label flips at rate ε: ``[(1−ε)ℓ(h) − ε ℓ(−h)] / (1−2ε)``."""
    rw, rl = _ratios(lp)
    z = beta * (rw - rl)
    losses = (-(1 - epsilon) * F.logsigmoid(z) + epsilon * F.logsigmoid(-z)) / (1 - 2 * epsilon)
    return ObjectiveOutput(losses, beta * rw.detach(), beta * rl.detach())


def cream_loss(lp: PairLogps, *, beta: float = 0.1) -> ObjectiveOutput:
    """CREAM: ``C·(−log σ(βh)) + (1−C)·(−log σ(−βh))`` with each pair's consistency C (cDPO with a
    per-pair ε = 1 − C); C = 1 is ``dpo``, C = 0 is ``dpo`` with chosen and rejected swapped."""
    rw, rl = _ratios(lp)
    z = beta * (rw - rl)
    c = torch.ones_like(z) if lp.consistency is None else lp.consistency.to(z.device, z.dtype)
    losses = -c * F.logsigmoid(z) - (1 - c) * F.logsigmoid(-z)
    return ObjectiveOutput(losses, beta * rw.detach(), beta * rl.detach())


def ipo_loss(lp: PairLogps, *, tau: float = 0.1, beta: float = 0.1) -> ObjectiveOutput:
    """IPO on length-averaged log-ratios: ``(h̄ − 1/(2τ))²``; rewards are reported with β."""
    rw, rl = _ratios(lp)
    h_bar = rw / lp.chosen_len.clamp(min=1.0) - rl / lp.rejected_len.clamp(min=1.0)
    return ObjectiveOutput((h_bar - 1 / (2 * tau)) ** 2, beta * rw.detach(), beta * rl.detach())


def hinge_loss(lp: PairLogps, *, gamma: float = 0.05, beta: float = 0.1) -> ObjectiveOutput:
    """SLiC / RSO hinge: ``max(0, 1 − γ h)``."""
    rw, rl = _ratios(lp)
    return ObjectiveOutput(torch.relu(1 - gamma * (rw - rl)), beta * rw.detach(), beta * rl.detach())


def sigmoid_norm_loss(lp: PairLogps, *, gamma: float = 0.05, beta: float = 0.1) -> ObjectiveOutput:
    """RSO sigmoid-norm: ``−log σ(γ h)``."""
    rw, rl = _ratios(lp)
    return ObjectiveOutput(-F.logsigmoid(gamma * (rw - rl)), beta * rw.detach(), beta * rl.detach())


def sft_loss(lp: PairLogps, *, beta: float = 0.1) -> ObjectiveOutput:
    """SFT add-on: ``−logp_θ(y_w)/|y_w|`` (its weight in the combination is the α of docs/methods.md)."""
    rw, rl = _ratios(lp)
    return ObjectiveOutput(
        -lp.policy_chosen / lp.chosen_len.clamp(min=1.0), beta * rw.detach(), beta * rl.detach()
    )


def flex_loss(lp: PairLogps, *, beta_pos: float = 0.1, beta_neg: float = 0.08) -> ObjectiveOutput:
    """Flex (3D-properties): ``−log σ(β⁺ρ(y_w) − β⁻ρ(y_l))``."""
    rw, rl = _ratios(lp)
    losses = -F.logsigmoid(beta_pos * rw - beta_neg * rl)
    return ObjectiveOutput(losses, beta_pos * rw.detach(), beta_neg * rl.detach())


Objective = Callable[..., ObjectiveOutput]

OBJECTIVES: dict[str, Objective] = {
    "dpo": dpo_loss,
    "cdpo": cdpo_loss,
    "rdpo": rdpo_loss,
    "cream": cream_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "sigmoid_norm": sigmoid_norm_loss,
    "sft": sft_loss,
    "flex": flex_loss,
}

PARAM_RANGES: dict[str, tuple[float, float]] = {
    "beta": (0.0, float("inf")),
    "tau": (0.0, float("inf")),
    "gamma": (0.0, float("inf")),
    "beta_pos": (0.0, float("inf")),
    "beta_neg": (0.0, float("inf")),
    "epsilon": (0.0, 0.5),
}


@dataclass(frozen=True)
class LossTerm:
    """One weighted objective in a combination, e.g. ``LossTerm("sft", 0.1)`` next to ``LossTerm("dpo")``."""

    name: str
    """Registry key: one of ``OBJECTIVES`` (dpo, cdpo, rdpo, cream, ipo, hinge, sigmoid_norm, sft, flex)."""
    weight: float = 1.0
    """Multiplier of this term's mean loss in the total."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Keyword parameters of the objective (beta, epsilon, tau, gamma, beta_pos, beta_neg)."""

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(
                f"loss term name: unknown objective {self.name!r}; choose from {sorted(OBJECTIVES)}"
            )
        if not (self.weight == self.weight and abs(self.weight) != float("inf")):
            raise ValueError(f"loss term {self.name}: weight must be a finite number, got {self.weight}")
        accepted = tuple(inspect.signature(OBJECTIVES[self.name]).parameters)[1:]
        for key, value in self.params.items():
            if key not in accepted or key not in PARAM_RANGES:
                raise ValueError(f"loss term {self.name}: unknown parameter {key!r}; accepted: {accepted}")
            low, high = PARAM_RANGES[key]
            if not (low < float(value) < high or (key == "epsilon" and float(value) == 0.0)):
                raise ValueError(f"loss term {self.name}: {key} must lie in ({low}, {high}), got {value}")


def combine(terms: Sequence[LossTerm], lp: PairLogps) -> tuple[Tensor, ObjectiveOutput]:
    """Weighted sum of the terms' mean losses; the rewards reported are those of the first term."""
    total: Tensor | None = None
    first: ObjectiveOutput | None = None
    for term in terms:
        out = OBJECTIVES[term.name](lp, **dict(term.params))
        first = out if first is None else first
        part = term.weight * out.losses.mean()
        total = part if total is None else total + part
    if total is None or first is None:
        raise ValueError("combine needs at least one loss term")
    return total, first


def pair_metrics(out: ObjectiveOutput, lp: PairLogps, loss: Tensor) -> dict[str, float]:
    """TRL-named metrics of one batch; an accuracy counts only pairs with a strictly positive margin."""
    margins = out.chosen_rewards - out.rejected_rewards
    return {
        "loss": float(loss.detach()),
        "rewards/chosen": float(out.chosen_rewards.mean()),
        "rewards/rejected": float(out.rejected_rewards.mean()),
        "rewards/margins": float(margins.mean()),
        "rewards/accuracies": float((margins > 0).float().mean()),
        "logps/chosen": float(lp.policy_chosen.detach().mean()),
        "logps/rejected": float(lp.policy_rejected.detach().mean()),
    }
