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


def bench_rows(n_pairs: int, seed: int = 0, prompt_words: int = 14) -> list[dict]:
    """Conversational rows (both trainers apply the chat template): a short system turn and a
    ``prompt_words``-word user turn (14: a ~30-token templated prompt); responses have 22–76 words
    (≈ 25–80 tokens)."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": words(prompt_words, prompt_words)},
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


MATMUL_SHAPE = (1024, 576, 1536)


def matmul_rates(dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> dict[str, float]:
    """FLOP/s of a transformer-shaped matmul (1024×576 @ 576×1536) measured in this process on each CPU
    path torch has: ``a @ b`` (MKL's sgemm for fp32, oneDNN for bf16) and oneDNN's inner product (what
    ``training.engine.lm.cpu_linear`` runs).  The roofline is the fastest: a share against a slower path
    would credit the engine for the library it avoids rather than for the work it skips."""
    m, k, n = MATMUL_SHAPE
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    b_rows = b.t().contiguous()
    paths = {"torch_matmul": lambda: a @ b}
    if torch.backends.mkldnn.is_available():
        paths["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b_rows, None, "none", [], "")
    return {name: 2 * m * k * n / _seconds_per_call(fn, seconds) for name, fn in paths.items()}


def matmul_rate(dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> float:
    """The roofline's matmul rate: the fastest path of ``matmul_rates``."""
    return max(matmul_rates(dtype, seconds).values())


def _seconds_per_call(fn, seconds: float) -> float:
    for _ in range(3):
        fn()
    count, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        fn()
        count += 1
    return (time.perf_counter() - tick) / count


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
