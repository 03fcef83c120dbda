"""Attention over packed preference pairs without the quadratic mask of the whole row.

A packed row holds pairs laid out as prompt + chosen + rejected.  The row's 4-D mask makes SDPA compute
every query against every key of the row; here each pair is attended on its own instead:

- prompt + chosen is an ordinary causal sequence (SDPA with ``is_causal``, which skips the masked half);
- the rejected queries see the prompt and the earlier rejected tokens: keys ``prompt ∥ rejected`` with a
  causal mask aligned to the bottom right.

The linear layers still run on the whole row at once.  Models that route attention through transformers'
attention interface take this path (``uses_pair_attention``); others keep the 4-D mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface

NAME = "prefstudio_pairs"
Span = tuple[int, int, int, int]  # start, prompt, chosen, rejected


@lru_cache(maxsize=4096)
def _lower_right_causal(queries: int, keys: int, device: torch.device) -> Tensor:
    """Query i may see key j when j ≤ i + keys − queries."""
    return torch.ones(queries, keys, dtype=torch.bool, device=device).tril(keys - queries)


def pair_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    pair_spans: Sequence[Span] | None = None,
    **_kwargs,
) -> tuple[Tensor, None]:
    """``query [1, H, T, D]``, ``key``/``value [1, KV, T, D]`` → ``[1, T, H, D]``."""
    if pair_spans is None:
        raise RuntimeError("pair attention needs pair_spans (run the model through token_logps)")
    grouped = key.shape[1] != query.shape[1]  # SDPA shares each key/value head itself: no repeated copies
    # torch.split, not slicing: a slice's backward writes a zero tensor the size of the whole row.
    sizes = [n for _, p, c, r in pair_spans for n in (p + c, r)]
    qs, ks, vs = (torch.split(x, sizes, dim=2) for x in (query, key, value))
    pieces = []
    for i, (_, p, _c, r) in enumerate(pair_spans):
        head_q, tail_q = qs[2 * i], qs[2 * i + 1]
        head_k, tail_k = ks[2 * i], ks[2 * i + 1]
        head_v, tail_v = vs[2 * i], vs[2 * i + 1]
        pieces.append(
            F.scaled_dot_product_attention(
                head_q, head_k, head_v, is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=grouped
            )
        )
        if r:
            keys = torch.cat([head_k[:, :, :p], tail_k], dim=2)
            values = torch.cat([head_v[:, :, :p], tail_v], dim=2)
            mask = _lower_right_causal(r, p + r, query.device)
            pieces.append(
                F.scaled_dot_product_attention(
                    tail_q,
                    keys,
                    values,
                    attn_mask=mask,
                    scale=scaling,
                    dropout_p=dropout,
                    enable_gqa=grouped,
                )
            )
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, pair_attention_forward)


def uses_pair_attention(body: nn.Module, row_length: int) -> bool:
    """Whether ``body`` (a decoder) dispatches attention through transformers' interface, with no sliding
    window shorter than the row (a window would hide keys the pair attention would show)."""
    config = getattr(body, "config", None)
    if config is None or not getattr(body, "_supports_attention_backend", False):
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager", NAME):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or window >= row_length


@contextmanager
def pair_attention(body: nn.Module) -> Iterator[None]:
    """Route ``body``'s attention through ``pair_attention_forward`` for the duration of the block."""
    config = body.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
