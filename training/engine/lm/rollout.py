"""Rollouts for PPO-style recipes: seeded batched sampling with the KV cache, and the per-token log-probs,
values and sequence scores of the sampled responses.

Prompts are left-padded to one width ``P`` and responses right-padded after their end, so every
``query_response`` row is ``[pads, prompt, response, pads]`` with its own ``attention_mask`` and positions
counted from the row's first real token.  Response token ``t`` sits at column ``P + t``; its log-prob comes
from the logits at ``P + t − 1`` and so does the value of the state before it.  Pads are told apart from real
tokens by the masks alone (SmolLM2's pad is its EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from training.engine.lm.logps import TargetLogProbs, decoder_and_head


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_at_eos: bool = True
    """End a response at its first EOS (else every response runs ``max_new_tokens``, as TRL with
    ``stop_token=None``)."""
    greedy: bool = False
    """Take the most likely token (temperature and top-p do not apply)."""


@dataclass
class Batch:
    """Query + response rows and the masks that tell their parts apart."""

    query_response: Tensor
    """``[B, P + T]`` token ids."""
    attention_mask: Tensor
    """``[B, P + T]``: 1 on every real prompt and response token."""
    prompt_width: int
    """``P``."""
    response_mask: Tensor
    """``[B, T]`` bool: the response tokens each row really has (to its EOS, inclusive)."""
    ended: Tensor
    """``[B]`` bool: the response emitted EOS."""
    sampled_logprobs: Tensor | None = None
    """``[B, T]``: each token's log-prob under the distribution it was drawn from (softmax of the logits
    over the temperature, before top-p), read off the sampling pass itself (0 past each end); the full
    forward ``response_logprobs`` gives the same values to float rounding."""

    @property
    def responses(self) -> Tensor:
        return self.query_response[:, self.prompt_width :]

    @property
    def position_ids(self) -> Tensor:
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)

    def rows(self, index: Tensor | Sequence[int]) -> Batch:
        index = torch.as_tensor(index, device=self.query_response.device)
        return Batch(
            self.query_response[index],
            self.attention_mask[index],
            self.prompt_width,
            self.response_mask[index],
            self.ended[index],
            None if self.sampled_logprobs is None else self.sampled_logprobs[index],
        )


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device) -> tuple[Tensor, Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def sample_token(logits: Tensor, config: SamplingConfig, generator: torch.Generator | None) -> Tensor:
    """One token per row from ``softmax(logits / T)`` restricted to the top-p nucleus (greedy: argmax)."""
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > config.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    *,
    eos_token_id: int,
    pad_token_id: int,
    generator: torch.Generator | None,
) -> Batch:
    """Sample one response per prompt, all rows at once, reusing the KV cache; the result depends only on
    the weights, the prompts and ``generator``'s state."""
    device = next(model.parameters()).device
    ids, prompt_mask = left_pad(prompts, pad_token_id, device)
    width, mask = ids.shape[1], prompt_mask
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    tokens, alive = [], torch.ones(len(prompts), dtype=torch.bool, device=device)
    response_mask, next_position, logprobs = [], positions[:, -1], []
    temperature = 1.0 if config.greedy else config.temperature
    for step in range(config.max_new_tokens):
        logits = out.logits[:, -1]
        token = sample_token(logits, config, generator)
        token = torch.where(alive, token, torch.full_like(token, pad_token_id))
        logp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, token[:, None]).squeeze(-1)
        logprobs.append(logp * alive)
        tokens.append(token)
        response_mask.append(alive.clone())
        if config.stop_at_eos:
            alive = alive & (token != eos_token_id)
        if step + 1 == config.max_new_tokens or not alive.any():
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        next_position = next_position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_position[:, None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    responses = torch.stack(tokens, dim=1)
    valid = torch.stack(response_mask, dim=1)
    ended = ((responses == eos_token_id) & valid).any(dim=1)
    attention = torch.cat([prompt_mask, valid.long()], dim=1)
    sampled = torch.stack(logprobs, dim=1)
    return Batch(torch.cat([ids, responses], dim=1), attention, width, valid, ended, sampled)


def response_hidden(body: nn.Module, batch: Batch) -> Tensor:
    """``[B, T, H]``: the body's hidden states at the columns that predict each response token."""
    out = body(
        input_ids=batch.query_response,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    p, t = batch.prompt_width, batch.response_mask.shape[1]
    return out.last_hidden_state[:, p - 1 : p + t - 1]


def response_logprobs(
    model: nn.Module, batch: Batch, *, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs ``[B, T]`` of the responses under ``softmax(logits / temperature)`` (the
    distribution they were sampled from), and the entropy of that distribution at each token if asked."""
    body, head = decoder_and_head(model)
    logits = head(response_hidden(body, batch)).float() / temperature
    flat = logits.reshape(-1, logits.shape[-1])
    chosen = TargetLogProbs.apply(flat, batch.responses.reshape(-1)).reshape(batch.responses.shape)
    entropy = None
    if with_entropy:  # a statistic, not a loss term: no graph
        with torch.no_grad():
            logp = torch.log_softmax(logits, dim=-1)
            entropy = -(logp.exp() * logp).sum(dim=-1)
    return chosen * batch.response_mask, entropy


def response_values(value_model: nn.Module, batch: Batch) -> Tensor:
    """``[B, T]``: a one-label sequence classifier's estimate of the state before each response token."""
    hidden = response_hidden(value_model.base_model, batch)
    return value_model.score(hidden).squeeze(-1).float() * batch.response_mask


@torch.no_grad()
def sequence_scores(reward_model: nn.Module, batch: Batch) -> Tensor:
    """``[B]``: the reward model's score of prompt + response, read at the response's last real token (at
    the prompt's last token for an empty response)."""
    body = reward_model.base_model
    out = body(
        input_ids=batch.query_response,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    last = batch.prompt_width - 1 + batch.response_mask.long().sum(dim=1)
    rows = torch.arange(batch.query_response.shape[0], device=last.device)
    return reward_model.score(out.last_hidden_state[rows, last]).squeeze(-1).float()
