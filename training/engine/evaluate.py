"""Held-out evaluation: implicit-reward accuracy (DPORM), margins, and per-token implicit rewards."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.engine.collate import PackingCollator
from training.engine.data import TokenizedPair
from training.engine.device import autocast
from training.engine.logps import segment_lengths, segment_sums, split_by_segment, token_logps
from training.engine.objectives import LossTerm, PairLogps, combine


def pair_logps(model: nn.Module, batch, ref_chosen: Tensor, ref_rejected: Tensor) -> PairLogps:
    """Policy sums of a packed batch next to the given reference sums."""
    pc, pr = segment_sums(token_logps(model, batch), batch)
    cl, rl = segment_lengths(batch)
    return PairLogps(pc, pr, ref_chosen.to(pc.device), ref_rejected.to(pc.device), cl, rl)


@torch.no_grad()
def evaluate_pairs(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    ref: dict[str, Tensor],
    collator: PackingCollator,
    terms: Sequence[LossTerm],
    *,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """``eval/…`` metrics over all pairs: loss, rewards (accuracy counts h > 0 only), log-probs."""
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0}
    chosen_r, rejected_r, logp_c, logp_r = [], [], [], []
    for start in range(0, len(pairs), batch_size):
        idx = slice(start, start + batch_size)
        batch = collator(pairs[idx])
        with autocast(batch.input_ids.device, autocast_dtype):
            lp = pair_logps(model, batch, ref["chosen"][idx], ref["rejected"][idx])
        loss, out = combine(terms, lp)
        sums["loss"] += float(loss) * batch.n_pairs
        chosen_r.append(out.chosen_rewards)
        rejected_r.append(out.rejected_rewards)
        logp_c.append(lp.policy_chosen)
        logp_r.append(lp.policy_rejected)
    model.train(was_training)
    cr, rr = torch.cat(chosen_r), torch.cat(rejected_r)
    return {
        "eval/loss": sums["loss"] / len(pairs),
        "eval/rewards/chosen": float(cr.mean()),
        "eval/rewards/rejected": float(rr.mean()),
        "eval/rewards/margins": float((cr - rr).mean()),
        "eval/rewards/accuracies": float((cr > rr).float().mean()),
        "eval/logps/chosen": float(torch.cat(logp_c).mean()),
        "eval/logps/rejected": float(torch.cat(logp_r).mean()),
    }


@torch.no_grad()
def token_rewards(
    policy: nn.Module,
    reference: nn.Module | None,
    pair: TokenizedPair,
    collator: PackingCollator,
    *,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Per-token implicit rewards β·(log π_θ − log π_ref) of the chosen and rejected tokens (heatmap).
    ``reference=None`` with a LoRA policy means the base model (adapters disabled)."""
    batch = collator([pair])
    pol = split_by_segment(token_logps(policy, batch), batch)
    if reference is None:
        with policy.disable_adapter():
            ref = split_by_segment(token_logps(policy, batch), batch)
    else:
        ref = split_by_segment(token_logps(reference, batch), batch)
    return beta * (pol[0] - ref[0]), beta * (pol[1] - ref[1])
