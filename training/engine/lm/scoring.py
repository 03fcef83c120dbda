"""Reward-model scores of single responses, tokenized exactly as the reward_model recipe tokenized one side.

Each ``(prompt, response)`` becomes the row ``{"prompt": prompt, "chosen": response, "rejected": response}``
and goes through ``data.tokenize_pair`` (chat template, prompt as prefix), so a response is read the way the
model saw it in training; ``max_length`` applies the same keep-start cut.  Sequences are batched with right
padding: under causal attention a real token never sees the pads after it, and the ``score`` head reads
each sequence at its own last real token — the value of the class's own unpadded forward,
``model(input_ids=prompt + response).logits[0, 0]``, and of the packed ``rewards.pair_rewards``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from training.engine.lm.data import tokenize_pair

DEFAULT_BATCH_SIZE = 8


def response_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Any, response: Any, *, max_length: int | None = None
) -> list[int]:
    """Token ids of prompt + response as training builds one side of a pair (keep-start truncation);
    ``prompt`` is a string or chat messages, ``response`` a string or assistant messages."""
    pair = tokenize_pair({"prompt": prompt, "chosen": response, "rejected": response}, tokenizer, 0)
    ids = list(pair.prompt_ids) + list(pair.chosen_ids)
    if max_length is not None:
        if len(pair.prompt_ids) >= max_length:
            raise ValueError(f"the prompt alone fills max_length ({max_length} tokens)")
        ids = ids[:max_length]
    return ids


@torch.no_grad()
def score_ids(model: nn.Module, sequences: Sequence[Sequence[int]], *, pad_token_id: int, batch_size: int):
    """Scalar rewards (floats, input order) of token sequences, read at each one's last token."""
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in members)
        ids = torch.full((len(members), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(members), width), dtype=torch.long)
        for row, i in enumerate(members):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
            mask[row, : len(sequences[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.sum(dim=1) - 1
        rewards = model.score(hidden[torch.arange(len(members), device=device), last]).squeeze(-1).float()
        for row, i in enumerate(members):
            scores[i] = float(rewards[row])
    return scores


def score_responses(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts_and_responses: Sequence[tuple[Any, Any]],
    *,
    max_length: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[float]:
    """The reward of each ``(prompt, response)``, in order; ``model`` is a one-label sequence classifier
    (``rewards.load_reward_model``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    sequences = [response_ids(tokenizer, p, r, max_length=max_length) for p, r in prompts_and_responses]
    return score_ids(model, sequences, pad_token_id=tokenizer.pad_token_id, batch_size=batch_size)
