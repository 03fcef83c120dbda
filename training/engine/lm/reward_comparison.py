"""DPO implicit reward against an explicit reward model on the same pairs (Lin et al.'s DPORM vs EXRM).

Each pair gets a margin from each side, and a side's accuracy is the share of pairs whose margin is
positive (chosen scored above rejected; a tie counts as wrong):

* the DPO model's implicit reward ``r(x, y) = β·(log π_θ(y|x) − log π_ref(y|x))``, so its margin is
  ``β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]`` — sequence log-probs of the
  packed pairs (``refcache.compute_reference``: ``logps.token_logps`` summed by ``logps.segment_sums``, the
  pass the DPO recipe's reference runs), for the policy and for its reference (the job's base model);
* the reward model's margin ``r(y_w) − r(y_l)`` read by ``rewards.pair_rewards``.

Rows are tokenized for each model with its own tokenizer and ``max_length`` (``data.tokenize_rows``, the
training rule), so a side scores the pairs it would have trained on; a side reports how many it scored.
``between_batches()`` runs before every batch of every pass (it may raise to stop the comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import TokenizedPair, tokenize_rows
from training.engine.lm.models import weights_fingerprint
from training.engine.lm.refcache import cached_reference, compute_reference
from training.engine.lm.rewards import pair_rewards

SPLITS = ("in_distribution", "shifted")


def _no_stop() -> None:
    return None


def sequence_logps(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    collator: PackingCollator,
    *,
    batch_size: int,
    cache_dir: Path | None = None,
    between_batches: Callable[[], None] = _no_stop,
) -> dict[str, Tensor]:
    """``{"chosen": [B], "rejected": [B]}`` sequence log-probs of ``model``; with ``cache_dir``, through the
    reference cache (a frozen reference is computed once per pairs and weights)."""
    if cache_dir is None:
        return compute_reference(
            model, pairs, collator, batch_size=batch_size, between_batches=between_batches
        )
    values, _ = cached_reference(
        model,
        weights_fingerprint(model),
        pairs,
        collator,
        batch_size=batch_size,
        precision="fp32",
        cache_dir=cache_dir,
        between_batches=between_batches,
    )
    return values


def implicit_reward_margins(
    policy: nn.Module,
    reference: nn.Module,
    pairs: Sequence[TokenizedPair],
    collator: PackingCollator,
    *,
    beta: float,
    batch_size: int = 8,
    reference_cache: Path | None = None,
    between_batches: Callable[[], None] = _no_stop,
) -> Tensor:
    """``[B]`` implicit-reward margins β·(ρ(y_w) − ρ(y_l)), ρ = log π_θ − log π_ref, in pair order."""
    if not pairs:
        return torch.zeros(0)
    kwargs = {"batch_size": batch_size, "between_batches": between_batches}
    pol = sequence_logps(policy, pairs, collator, **kwargs)
    ref = sequence_logps(reference, pairs, collator, cache_dir=reference_cache, **kwargs)
    return beta * ((pol["chosen"] - ref["chosen"]) - (pol["rejected"] - ref["rejected"]))


@torch.no_grad()
def reward_model_margins(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    collator: PackingCollator,
    *,
    batch_size: int = 8,
    between_batches: Callable[[], None] = _no_stop,
) -> Tensor:
    """``[B]`` reward-model margins r(y_w) − r(y_l), in pair order."""
    was_training = model.training
    model.eval()
    margins = []
    for start in range(0, len(pairs), batch_size):
        between_batches()
        chosen, rejected = pair_rewards(model, collator(pairs[start : start + batch_size]))
        margins.append((chosen - rejected).float().cpu())
    model.train(was_training)
    return torch.cat(margins) if margins else torch.zeros(0)


def margin_accuracy(margins: Tensor) -> float | None:
    """Share of pairs with a positive margin (None for no pair)."""
    return float((margins > 0).float().mean()) if margins.numel() else None


@dataclass
class ScoredSide:
    """One model as the comparison uses it: the model, its tokenizer and training ``max_length``."""

    model: nn.Module
    tokenizer: object
    max_length: int | None = None

    def pairs(self, rows: Sequence[dict]) -> list[TokenizedPair]:
        return tokenize_rows(rows, self.tokenizer, max_length=self.max_length)[0]

    def collator(self) -> PackingCollator:
        pad = self.tokenizer.pad_token_id
        return PackingCollator(pad if pad is not None else 0, None, next(self.model.parameters()).device)


def _summary(margins: Tensor) -> dict:
    mean = float(margins.mean()) if margins.numel() else None
    return {"accuracy": margin_accuracy(margins), "pairs": int(margins.numel()), "mean_margin": mean}


def compare_on_splits(
    splits: dict[str, Sequence[dict]],
    *,
    policy: ScoredSide,
    reference: nn.Module,
    beta: float,
    reward_model: ScoredSide,
    batch_size: int = 8,
    reference_cache: Path | None = None,
    between_batches: Callable[[], None] = _no_stop,
) -> dict:
    """Per split: rows ``n`` and, for ``dpo`` and ``reward_model``, accuracy, pairs scored and mean
    margin; then ``drop`` (in-distribution accuracy − shifted accuracy) of each side.  ``reference`` uses
    the policy's tokenizer."""
    report: dict = {}
    for name, rows in splits.items():
        pol_pairs, rm_pairs = policy.pairs(rows), reward_model.pairs(rows)
        dpo = implicit_reward_margins(
            policy.model,
            reference,
            pol_pairs,
            policy.collator(),
            beta=beta,
            batch_size=batch_size,
            reference_cache=reference_cache,
            between_batches=between_batches,
        )
        rm = reward_model_margins(
            reward_model.model,
            rm_pairs,
            reward_model.collator(),
            batch_size=batch_size,
            between_batches=between_batches,
        )
        report[name] = {"n": len(rows), "dpo": _summary(dpo), "reward_model": _summary(rm)}
    return {**report, "drop": accuracy_drops(report)}


def accuracy_drops(report: dict) -> dict[str, float | None]:
    """In-distribution minus shifted accuracy of each side (None where a split scored no pair)."""
    drops = {}
    for side in ("dpo", "reward_model"):
        before = report.get("in_distribution", {}).get(side, {}).get("accuracy")
        after = report.get("shifted", {}).get(side, {}).get("accuracy")
        drops[side] = None if before is None or after is None else before - after
    return drops
