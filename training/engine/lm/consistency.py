"""CREAM's labeller arithmetic (Wang et al., consistency-regularised self-rewarding): pure functions.

Each round samples several responses per prompt and ranks them twice, by the current model's implicit reward
and by the previous round's; how far the two rankings agree is the pair's consistency
``C = (τ + 1) / 2`` with Kendall's τ-b, which the ``cream`` objective uses to weigh the pair's two directions
(``objectives/preference.py``).  The implicit reward is DPO's ρ(y) = log π(y) − log π_ref(y) without β: β
scales every reward of a ranking alike, so it changes no order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from training.engine.lm.online import Candidate, best_worst_pair
from training.engine.lm.rollout import Batch, left_pad, response_logprobs


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


def response_batch(
    rows: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_token_id: int, device
) -> Batch:
    """``(prompt ids, response ids)`` rows as a rollout batch: prompts left-padded, responses right-padded."""
    query, query_mask = left_pad([prompt for prompt, _ in rows], pad_token_id, device)
    width = max(1, *(len(response) for _, response in rows))
    responses = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, (_, response) in enumerate(rows):
        responses[row, : len(response)] = torch.tensor(list(response), dtype=torch.long)
        mask[row, : len(response)] = True
    responses, mask = responses.to(device), mask.to(device)
    return Batch(
        query_response=torch.cat([query, responses], dim=1),
        attention_mask=torch.cat([query_mask, mask.long()], dim=1),
        prompt_width=query.shape[1],
        response_mask=mask,
        ended=torch.ones(len(rows), dtype=torch.bool, device=device),
    )


def candidate_rewards(
    policy: nn.Module,
    reference: nn.Module | None,
    prompt_ids: Sequence[Sequence[int]],
    responses: Sequence[Sequence[Sequence[int]]],
    *,
    pad_token_id: int,
    batch_size: int = 8,
    between_batches: Callable[[int], None] = lambda done: None,
) -> list[list[float]]:
    """Each prompt's responses' implicit rewards (``implicit_rewards``), in eval mode, grouped by prompt;
    ``between_batches(responses done)`` runs before each batch (it may raise to stop the work)."""
    flat = [
        (prompt, response) for prompt, found in zip(prompt_ids, responses, strict=True) for response in found
    ]
    device = next(policy.parameters()).device
    models = [m for m in (policy, reference) if m is not None]
    modes = [m.training for m in models]
    for model in models:
        model.eval()
    rewards: list[float] = []
    try:
        for start in range(0, len(flat), max(1, batch_size)):
            between_batches(start)
            batch = response_batch(flat[start : start + batch_size], pad_token_id=pad_token_id, device=device)
            rewards += implicit_rewards(policy, reference, batch).float().tolist()
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    grouped, start = [], 0
    for found in responses:
        grouped.append(rewards[start : start + len(found)])
        start += len(found)
    return grouped


def cream_rows(
    prompts: Sequence,
    candidates: Sequence[Sequence[Candidate]],
    current: Sequence[Sequence[float]],
    previous: Sequence[Sequence[float]] | None,
) -> tuple[list[dict], dict]:
    """CREAM's self-labelled rows: per prompt, chosen/rejected = the best/worst response by the current
    model's implicit reward, ``consistency`` = C of the current and the previous ranking (1.0 for every row
    when there is no previous ranking: plain self-rewarding); a prompt whose responses the current model
    ranks all alike gives no row.  The summary holds the pairs, the prompts without one, the mean and
    lowest C (None without a previous ranking) and the share of pairs a reward model's scores, where the
    candidates have them, order the same way (how often self-rewarding agrees with it)."""
    rows, values, no_pair = [], [], 0
    for index, (prompt, found) in enumerate(zip(prompts, candidates, strict=True)):
        pairs = best_worst_pair(current[index])
        if not pairs:
            no_pair += 1
            continue
        chosen, rejected = pairs[0]
        c = 1.0 if previous is None else consistency(current[index], previous[index])
        values.append(c)
        row = {
            "prompt": prompt,
            "chosen": found[chosen].response,
            "rejected": found[rejected].response,
            "consistency": c,
            "reward_chosen": current[index][chosen],
            "reward_rejected": current[index][rejected],
        }
        if found[chosen].score is not None and found[rejected].score is not None:
            row.update(score_chosen=found[chosen].score, score_rejected=found[rejected].score)
        rows.append(row)
    measured = previous is not None and values
    judged = [r["score_chosen"] > r["score_rejected"] for r in rows if "score_chosen" in r]
    summary = {
        "pairs": len(rows),
        "prompts": len(prompts),
        "prompts_without_pair": no_pair,
        "cream/consistency": sum(values) / len(values) if measured else None,
        "cream/consistency_min": min(values) if measured else None,
        "cream/reward_model_agreement": sum(judged) / len(judged) if judged else None,
    }
    return rows, summary
