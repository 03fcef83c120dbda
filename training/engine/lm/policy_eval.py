"""Greedy held-out generations of a policy, scored by a reward model, with their KL to a reference: what
the PPO recipe's evaluation reports (``PPORecipe.held_out_generations``) and what the studio's PPO-vs-DPO
comparison tabulates for a base, a DPO and a PPO model (``compare_policies``).

* A response's KL to the reference is Σ_t (log π(y_t) − log π_ref(y_t)) over the response's own tokens (to
  its EOS, inclusive), on the greedy response — the single-sample estimate PPO's ``objective/kl`` uses.
* Its score is the reward model's output at its last token (``rollout.sequence_scores``); the reward
  model reads the policy's token ids, so it must share the policy's vocabulary (``same_vocabulary``).
* Win rate against a baseline: the share of prompts whose score is above the baseline's score on the same
  prompt, a tie counting ½.

``between_batches()`` runs before every batch (it may raise to stop the work).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.engine.lm.data import prompt_token_ids
from training.engine.lm.rollout import Batch, SamplingConfig, response_logprobs, sample, sequence_scores

BASE = "base"
"""The name ``compare_policies`` gives the reference model's own generations."""


def _no_stop() -> None:
    return None


@dataclass
class Scored:
    """One batch of greedy responses with the reward model's score and the KL to the reference."""

    batch: Batch
    scores: Tensor
    """``[B]``."""
    kl: Tensor
    """``[B]``: Σ_t (log π − log π_ref) over each response's tokens."""


def logprobs_of(model: nn.Module) -> Callable[[Batch], Tensor]:
    """``batch → [B, T]`` response log-probs of ``model`` (a reference for ``greedy_scored``)."""
    return lambda batch: response_logprobs(model, batch)[0]


@torch.no_grad()
def greedy_scored(
    policy: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    reward_model: nn.Module,
    reference: Callable[[Batch], Tensor],
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    stop_at_eos: bool = True,
    batch_size: int = 8,
    between_batches: Callable[[], None] = _no_stop,
) -> Iterator[Scored]:
    """Greedy responses of ``policy`` to ``prompts`` (token ids), ``batch_size`` prompts at a time, each
    batch scored by ``reward_model`` and compared with ``reference`` (log-probs at temperature 1)."""
    greedy = SamplingConfig(max_new_tokens, stop_at_eos=stop_at_eos, greedy=True)
    for start in range(0, len(prompts), batch_size):
        between_batches()
        batch = sample(
            policy,
            prompts[start : start + batch_size],
            greedy,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            generator=None,
        )
        scores = sequence_scores(reward_model, batch)
        logprobs = response_logprobs(policy, batch)[0]
        kl = ((logprobs - reference(batch)) * batch.response_mask).sum(dim=1)
        yield Scored(batch, scores, kl)


def response_rows(tokenizer, scored: Scored) -> list[dict]:
    """One row per response: decoded text (special tokens dropped), score, KL, length, ended."""
    batch = scored.batch
    lengths = batch.response_mask.sum(dim=1).tolist()
    return [
        {
            "response": tokenizer.decode(
                batch.responses[row, : lengths[row]].tolist(), skip_special_tokens=True
            ).strip(),
            "score": float(scored.scores[row]),
            "kl": float(scored.kl[row]),
            "length": int(lengths[row]),
            "ended": bool(batch.ended[row]),
        }
        for row in range(len(lengths))
    ]


def distinct_prompts(
    prompts: Sequence[Any], tokenizer, *, max_prompt_length: int | None = None
) -> tuple[list[Any], list[list[int]], int]:
    """The distinct prompts (strings or chat messages) in first-seen order, their token ids as generation
    sees them, and how many distinct prompts were dropped for being over ``max_prompt_length`` tokens."""
    kept, ids, seen, dropped = [], [], set(), 0
    for prompt in prompts:
        key = json.dumps(prompt, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        tokens = prompt_token_ids(tokenizer, prompt)
        if max_prompt_length is not None and len(tokens) > max_prompt_length:
            dropped += 1
            continue
        kept.append(prompt)
        ids.append(tokens)
    return kept, ids, dropped


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def win_rate(scores: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Share of prompts scored above the baseline on the same prompt, a tie counting ½ (None for none)."""
    if len(scores) != len(baseline):
        raise ValueError(f"win_rate: {len(scores)} scores against {len(baseline)} baseline scores")
    wins = [1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, baseline, strict=True)]
    return _mean(wins)


def policy_summary(rows: Sequence[dict], baseline: Sequence[dict] | None = None) -> dict:
    """Mean score, win rate against ``baseline`` (None without one), mean KL, mean length and EOS rate of
    one model's ``response_rows`` (in prompt order, as ``baseline``'s)."""
    scores = [r["score"] for r in rows]
    return {
        "n": len(rows),
        "mean_score": _mean(scores),
        "win_rate": None if baseline is None else win_rate(scores, [r["score"] for r in baseline]),
        "mean_kl": _mean([r["kl"] for r in rows]),
        "mean_length": _mean([r["length"] for r in rows]),
        "eos_rate": _mean([float(r["ended"]) for r in rows]),
    }


def same_vocabulary(tokenizer, others: dict[str, Any]) -> None:
    """Raise ValueError naming the first of ``others`` (name → tokenizer) whose vocabulary differs from
    ``tokenizer``'s: it would read the policies' token ids as other words."""
    vocab = tokenizer.get_vocab()
    for name, other in others.items():
        if other.get_vocab() != vocab:
            raise ValueError(f"{name}: another tokenizer than the base model's; train it from the same base")


def compare_policies(
    prompts: Sequence[Any],
    *,
    tokenizer,
    base: nn.Module,
    policies: dict[str, nn.Module],
    reward_model: nn.Module,
    max_new_tokens: int,
    stop_at_eos: bool = True,
    max_prompt_length: int | None = None,
    batch_size: int = 8,
    examples: int = 6,
    between_batches: Callable[[], None] = _no_stop,
) -> dict:
    """Greedy responses of ``base`` and of each of ``policies`` (name → causal LM) on the distinct
    ``prompts``, scored by ``reward_model``, with KL to ``base``: ``{"prompts", "dropped", "models":
    {name: policy_summary (win rate against the base)}, "examples": [{"prompt", name: row, ...}]}``
    (the first ``examples`` prompts), ``"base"`` first."""
    kept, ids, dropped = distinct_prompts(prompts, tokenizer, max_prompt_length=max_prompt_length)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    reference = logprobs_of(base)
    rows: dict[str, list[dict]] = {}
    for name, model in {BASE: base, **policies}.items():
        was_training = model.training
        model.eval()
        rows[name] = []
        for scored in greedy_scored(
            model,
            ids,
            reward_model=reward_model,
            reference=reference,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            stop_at_eos=stop_at_eos,
            batch_size=batch_size,
            between_batches=between_batches,
        ):
            rows[name] += response_rows(tokenizer, scored)
        model.train(was_training)
    models = {name: policy_summary(r, None if name == BASE else rows[BASE]) for name, r in rows.items()}
    shown = [{"prompt": kept[i], **{name: r[i] for name, r in rows.items()}} for i in range(len(kept))]
    return {"prompts": len(kept), "dropped": dropped, "models": models, "examples": shown[:examples]}
