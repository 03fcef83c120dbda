"""The data side of an online round: sample K responses per prompt from the current policy, score them with a
reward model, and turn the scores into preference pairs (``docs/loops.md``).

Pair rules, on one prompt's scored candidates:

* ``best_worst`` (the OneRec recipe): the highest-scored response is chosen, the lowest rejected; a prompt
  whose candidates all score the same gives no pair.
* ``gap``: every ordered pair whose scores differ by at least ``gap``.
* ``sampled_pairs`` (RSO's baseline of plain policy samples labelled by the reward model): the responses
  paired in the order they were sampled (1st with 2nd, 3rd with 4th, …), each pair labelled by its scores
  (a tie is dropped); with ``k`` = 2·``rso_accept`` it makes as many pairs as ``rso``.
* ``rso`` (Liu et al., statistical rejection sampling): responses are accepted with probability
  exp((r − r_max)/β), r_max the best score among those not yet accepted, pass after pass until ``accept``
  are, which draws from π ∝ π_sft·exp(r/β); the accepted ones are paired in acceptance order (1st with 2nd,
  3rd with 4th, …) and each pair labelled by its scores (a tie is dropped).

The reward model reads the policy's own token ids (``rollout.sequence_scores``), so it must share the
policy's vocabulary (``policy_eval.same_vocabulary``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from training.engine.lm.rollout import SamplingConfig, sample, sequence_scores

PAIR_RULES = ("best_worst", "gap", "sampled_pairs", "rso")


@dataclass
class Candidate:
    """One sampled response of one prompt."""

    response: str
    length: int
    """Response tokens (to its EOS, inclusive)."""
    ended: bool
    score: float | None = None
    """The reward model's score (None before scoring)."""
    token_ids: list[int] | None = None
    """The response's own tokens, as sampled (a labeller that scores them again reads these, not the
    decoded text, which need not tokenize back to the same ids)."""

    def to_dict(self) -> dict:
        return {
            "response": self.response,
            "length": self.length,
            "ended": self.ended,
            "score": self.score,
            "token_ids": self.token_ids,
        }


@dataclass
class RejectionStats:
    """What statistical rejection sampling did on one prompt."""

    accepted: list[int] = field(default_factory=list)
    """Candidate indices in acceptance order."""
    draws: int = 0
    """Uniform draws made (a pass makes as many as there are candidates not yet accepted, fewer when it
    reaches ``accept``)."""
    passes: int = 0

    @property
    def acceptance_rate(self) -> float:
        return len(self.accepted) / self.draws if self.draws else 0.0


@torch.no_grad()
def sample_candidates(
    policy: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    tokenizer,
    k: int,
    sampling: SamplingConfig,
    seed: int,
    reward_model: nn.Module | None = None,
    batch_size: int = 16,
    between_batches: Callable[[int], None] = lambda done: None,
) -> list[list[Candidate]]:
    """``k`` sampled responses for each prompt (token ids), scored by ``reward_model`` when given.  The
    draws depend only on the weights, the prompts, ``k``, ``seed`` and ``batch_size`` (one generator runs
    through the batches, so another split of the rows draws other responses); ``between_batches(prompts
    done)`` runs before each batch (it may raise to stop the work)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    was_training = policy.training
    policy.eval()
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    rows = [index for index in range(len(prompt_ids)) for _ in range(k)]
    out: list[list[Candidate]] = [[] for _ in prompt_ids]
    per_batch = max(1, batch_size)
    try:
        for start in range(0, len(rows), per_batch):
            between_batches(start // k)
            members = rows[start : start + per_batch]
            batch = sample(
                policy,
                [prompt_ids[i] for i in members],
                sampling,
                eos_token_id=eos,
                pad_token_id=pad,
                generator=generator,
            )
            scores = sequence_scores(reward_model, batch).tolist() if reward_model is not None else None
            lengths = batch.response_mask.sum(dim=1).tolist()
            for row, prompt in enumerate(members):
                tokens = batch.responses[row, : lengths[row]].tolist()
                out[prompt].append(
                    Candidate(
                        response=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                        length=int(lengths[row]),
                        ended=bool(batch.ended[row]),
                        score=None if scores is None else float(scores[row]),
                        token_ids=tokens,
                    )
                )
    finally:
        policy.train(was_training)
    return out


def rejection_sample(
    scores: Sequence[float], *, accept: int, beta: float, rng: random.Random
) -> RejectionStats:
    """RSO's statistical rejection sampling (Liu et al., Algorithm 1) over one prompt's ``scores``: accept up
    to ``accept`` candidates (all of them when there are fewer).  A pass computes r_max over the candidates
    not yet accepted and makes that many uniform draws among them, each accepted with probability
    exp((r − r_max)/β); so the first accepted is ∝ exp(r/β) over all candidates, each later one ∝ exp(r/β)
    over those left (Algorithm 1 scans the list in order instead, which makes the result depend on the
    candidates' positions)."""
    if beta <= 0:
        raise ValueError(f"beta must be above 0, not {beta}")
    stats, remaining = RejectionStats(), list(range(len(scores)))
    wanted = min(accept, len(scores))
    while len(stats.accepted) < wanted:
        stats.passes += 1
        best = max(scores[i] for i in remaining)  # stays an upper bound while accepted ones leave
        for _ in range(len(remaining)):
            # A uniform draw from the remaining ones (not a scan in list order, which would favour
            # early candidates): each accepted index is then ∝ exp(r/β) among those remaining.
            stats.draws += 1
            index = remaining[rng.randrange(len(remaining))]
            if rng.random() >= math.exp((scores[index] - best) / beta):
                continue
            stats.accepted.append(index)
            remaining.remove(index)
            if len(stats.accepted) == wanted:
                break
    return stats


def labelled_pairs(scores: Sequence[float], order: Sequence[int]) -> list[tuple[int, int]]:
    """``order``'s candidates paired 1st with 2nd, 3rd with 4th, …, each ``(chosen, rejected)`` by score;
    tied pairs are dropped."""
    pairs = []
    for a, b in zip(order[0::2], order[1::2], strict=False):
        if scores[a] != scores[b]:
            pairs.append((a, b) if scores[a] > scores[b] else (b, a))
    return pairs


def best_worst_pair(scores: Sequence[float]) -> list[tuple[int, int]]:
    """The best and worst candidate as ``[(chosen, rejected)]`` (first index on ties), or ``[]``."""
    if len(scores) < 2:
        return []
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return [] if scores[best] == scores[worst] else [(best, worst)]


def gap_pairs(scores: Sequence[float], gap: float) -> list[tuple[int, int]]:
    """Every ``(chosen, rejected)`` whose scores differ by at least ``gap`` (> 0)."""
    if gap <= 0:
        raise ValueError(f"gap must be above 0, not {gap}")
    n = len(scores)
    return [(i, j) for i in range(n) for j in range(n) if i != j and scores[i] - scores[j] >= gap]


@dataclass(frozen=True)
class PairRule:
    """How one prompt's scored candidates become pairs."""

    rule: str = "best_worst"
    gap: float = 0.5
    """``gap``: the smallest score difference a pair needs."""
    rso_accept: int = 8
    """``rso``: responses accepted per prompt."""
    rso_beta: float = 0.5
    """``rso``: the sampling temperature β of π ∝ π_sft·exp(r/β)."""

    def __post_init__(self) -> None:
        if self.rule not in PAIR_RULES:
            raise ValueError(f"pair rule: one of {', '.join(PAIR_RULES)}, not {self.rule!r}")
        if self.gap <= 0 or self.rso_beta <= 0 or self.rso_accept < 2:
            raise ValueError("gap and rso_beta must be above 0, rso_accept at least 2")


def pairs_for(
    scores: Sequence[float], rule: PairRule, rng: random.Random
) -> tuple[list[tuple[int, int]], dict]:
    """``(pairs, stats)`` for one prompt; ``stats`` holds the rejection sampler's draws and acceptances."""
    if rule.rule == "best_worst":
        return best_worst_pair(scores), {}
    if rule.rule == "gap":
        return gap_pairs(scores, rule.gap), {}
    if rule.rule == "sampled_pairs":
        return labelled_pairs(scores, range(len(scores))), {}
    stats = rejection_sample(scores, accept=rule.rso_accept, beta=rule.rso_beta, rng=rng)
    return labelled_pairs(scores, stats.accepted), {"accepted": len(stats.accepted), "draws": stats.draws}


def preference_rows(
    prompts: Sequence, candidates: Sequence[Sequence[Candidate]], rule: PairRule, *, seed: int
) -> tuple[list[dict], dict]:
    """TRL preference rows (``prompt``, ``chosen``, ``rejected``, ``score_chosen``, ``score_rejected``) for
    every prompt's scored candidates, and the summary: pairs, prompts without a pair, the mean best−worst
    score spread and, for ``rso``, the acceptance rate (accepted / draws)."""
    rng = random.Random(seed)
    rows, no_pair, accepted, draws, spreads = [], 0, 0, 0, []
    for prompt, found in zip(prompts, candidates, strict=True):
        scores = [c.score for c in found]
        if any(s is None for s in scores):
            raise ValueError("every candidate needs a reward-model score before pairing")
        pairs, stats = pairs_for(scores, rule, rng)
        accepted, draws = accepted + stats.get("accepted", 0), draws + stats.get("draws", 0)
        if scores:
            spreads.append(max(scores) - min(scores))
        no_pair += not pairs
        for chosen, rejected in pairs:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": found[chosen].response,
                    "rejected": found[rejected].response,
                    "score_chosen": scores[chosen],
                    "score_rejected": scores[rejected],
                }
            )
    summary = {
        "pairs": len(rows),
        "prompts": len(prompts),
        "prompts_without_pair": no_pair,
        "mean_score_spread": sum(spreads) / len(spreads) if spreads else None,
    }
    if rule.rule == "rso":
        summary["rso/acceptance_rate"] = accepted / draws if draws else None
        summary["rso/accepted_per_prompt"] = accepted / len(prompts) if prompts else None
    return rows, summary
