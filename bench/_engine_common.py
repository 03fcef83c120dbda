"""Helpers for bench/dpo_throughput.py: seeded pairs, the minimal-work FLOP count, the matmul rate."""

from __future__ import annotations

import random
import resource
import time

import torch

_TEXT = (
    "the of and to in is was for on that with as by at from his her it an are were be this which or "
    "had not but have their one all been can also has more when who they time year people way day man "
    "thing woman life child world school state family student group country problem hand part place case "
    "week company system"
)
WORDS = _TEXT.split()


def bench_rows(n_pairs: int, seed: int = 0) -> list[dict]:
    """Conversational rows (both trainers apply the chat template): a short system turn and a ~14-word
    user turn give a ~30-token templated prompt; responses have 22–76 words (≈ 25–80 tokens)."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": words(14, 14)},
            ],
            "chosen": [{"role": "assistant", "content": words(22, 76)}],
            "rejected": [{"role": "assistant", "content": words(22, 76)}],
        }
        for _ in range(n_pairs)
    ]


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def attention_flops_per_pair(config, prompt: int, chosen: int, rejected: int) -> float:
    """QKᵀ and AV of one forward: 2·2·heads·head_dim FLOPs per visible key per query, per layer."""
    visible = sum(range(1, prompt + 1)) + sum(prompt + j for j in range(1, chosen + 1))
    visible += sum(prompt + j for j in range(1, rejected + 1))
    return 4 * config.num_attention_heads * head_dim(config) * config.num_hidden_layers * visible


def forward_flops_per_pair(config, prompt: int, chosen: int, rejected: int) -> float:
    """Matmul FLOPs of one forward over prompt (once) + chosen + rejected, logits only on response tokens."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    heads, kv, hd = config.num_attention_heads, config.num_key_value_heads, head_dim(config)
    linear = 2 * layers * (h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * inter)
    tokens = prompt + chosen + rejected
    head = 2 * h * config.vocab_size * (chosen + rejected)
    return linear * tokens + attention_flops_per_pair(config, prompt, chosen, rejected) + head


def minimal_flops(config, pairs, epochs: int) -> float:
    """Reference forward once per pair + epochs × (forward + backward = 3 forwards) of the policy."""
    fwd = sum(
        forward_flops_per_pair(config, len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids))
        for p in pairs
    )
    return fwd * (1 + 3 * epochs)


def matmul_rate(dtype: torch.dtype = torch.float32, seconds: float = 2.0) -> float:
    """FLOP/s of a transformer-shaped matmul (1024×576 @ 576×1536) measured in this process."""
    a = torch.randn(1024, 576).to(dtype)
    b = torch.randn(576, 1536).to(dtype)
    for _ in range(3):
        a @ b
    count, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        a @ b
        count += 1
    return 2 * 1024 * 576 * 1536 * count / (time.perf_counter() - tick)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
