"""How close to the FLOP roofline can bench/dpo_throughput.py's fp32 run get here? Measured part by part.

The roofline share is the run's necessary matmul FLOPs ÷ the rate of one transformer-shaped matmul
(1024×576 @ 576×1536) on the fastest path torch has here (``_engine_common.matmul_rates``).  This script
measures, in one process, what bounds that share from above, with the same model config, pairs and
batches as the bench:

1. GEMM ceiling: every matmul of a training step (forward, input and weight gradients, the LM head), run
   as the engine runs it and timed on its own; their FLOP-weighted rate against the benchmark shape's.
2. Attention: the engine's pair attention (fwd + bwd, all layers) against its FLOPs at the matmul rate.
3. First touch: seconds per GiB to fault fresh memory in, against refilling memory already touched, and the
   run's working set (weights' gradients, AdamW moments, saved activations of the largest batch).

It then prints the best share the run could reach if everything else (norms, activations, softmax,
optimizer, setup) cost nothing.  It is an optimistic bound: a matmul timed on its own finds its operands in
cache, and the first touch is timed sequentially on one buffer, while inside a step the weights come from
memory and both threads fault pages in between kernels.  ``python bench/roofline_ceiling.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _engine_common import (  # noqa: E402
    attention_flops_per_pair,
    bench_rows,
    forward_flops_per_pair,
    head_dim,
    matmul_rate,
)

from training.engine.lm.cpu_linear import (  # noqa: E402
    onednn_linear_available,
    times_transposed,
    weight_gradient,
)
from training.engine.runtime.memory import retain_freed_memory  # noqa: E402

BATCH, EPOCHS, MAX_LENGTH = 8, 2, 256


def _timed(fn, seconds: float = 0.6) -> float:
    """Median seconds per call of ``fn`` (after warm-up calls)."""
    for _ in range(2):
        fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return sorted(times)[len(times) // 2]


def _lengths(pair) -> tuple[int, int, int]:
    return len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)


def step_linears(config, tokens: int, targets: int) -> list[tuple[int, int, int, int]]:
    """(rows, fan_in, fan_out, count) of every linear layer call in one forward over ``tokens`` packed
    tokens (the LM head over ``targets`` rows).  A training step runs three matmuls for each: the forward,
    the input gradient and the weight gradient."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = head_dim(config)
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]
    shapes: dict[tuple[int, int, int], int] = {}
    for fan_in, fan_out in linears:
        shapes[(tokens, fan_in, fan_out)] = shapes.get((tokens, fan_in, fan_out), 0) + layers
    head = (targets, h, config.vocab_size)
    shapes[head] = shapes.get(head, 0) + 1
    return [(m, fan_in, fan_out, count) for (m, fan_in, fan_out), count in shapes.items()]


def linear_seconds(linears) -> tuple[float, float]:
    """Measured seconds of the three matmuls of every linear call, run as the engine runs them
    (``cpu_linear``: oneDNN where available), and their FLOPs."""
    onednn = onednn_linear_available()
    product = times_transposed if onednn else lambda a, b: a @ b.t()
    total, flops = 0.0, 0.0
    for m, fan_in, fan_out, count in linears:
        x, w, g = torch.randn(m, fan_in), torch.randn(fan_out, fan_in), torch.randn(m, fan_out)
        forward = _timed(lambda x=x, w=w: product(x, w))
        input_grad = _timed(lambda g=g, w=w: product(g, w.t()))
        if onednn:
            weight_grad = _timed(lambda g=g, x=x, w=w: weight_gradient(g, x, w, False))
        else:
            weight_grad = _timed(lambda g=g, x=x: g.t() @ x)
        total += (forward + input_grad + weight_grad) * count
        flops += 3 * 2.0 * m * fan_in * fan_out * count
    return total, flops


def attention_seconds(config, batch) -> float:
    """Pair attention forward + backward over one packed row, all layers."""
    from training.engine.lm.pair_attention import pair_attention_forward

    heads, kv = config.num_attention_heads, config.num_key_value_heads
    hd = head_dim(config)
    t = batch.n_tokens
    q = torch.randn(1, heads, t, hd, requires_grad=True)
    k = torch.randn(1, kv, t, hd, requires_grad=True)
    v = torch.randn(1, kv, t, hd, requires_grad=True)
    grad = torch.randn(1, t, heads, hd)

    def once():
        out, _ = pair_attention_forward(None, q, k, v, None, scaling=hd**-0.5, pair_spans=batch.spans[0])
        out.backward(grad)

    return _timed(once) * config.num_hidden_layers


def first_touch_seconds_per_gib() -> tuple[float, float]:
    """Seconds per GiB to fill fresh memory from the OS, and to fill it again once it is touched."""
    n = 2**28  # 1 GiB of float32
    tick = time.perf_counter()
    block = torch.empty(n)
    block.fill_(1.0)
    fresh = time.perf_counter() - tick
    tick = time.perf_counter()
    block.fill_(2.0)
    return fresh, time.perf_counter() - tick


def saved_activation_bytes(model, batch) -> int:
    """Bytes autograd keeps for the backward of one training forward over ``batch``."""
    from training.engine.lm.logps import token_logps

    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_logps(model, batch).sum()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


def main() -> None:
    from training.engine.lm.collate import PackingCollator
    from training.engine.lm.data import tokenize_rows
    from training.engine.lm.models import ensure_bundled, load_model, load_tokenizer

    retain_freed_memory()
    ensure_bundled("smollm2-135m-instruct")
    tokenizer, model = load_tokenizer("bundled"), load_model("bundled")
    config = model.config
    pairs, _ = tokenize_rows(bench_rows(64), tokenizer, max_length=MAX_LENGTH)
    collate = PackingCollator(tokenizer.pad_token_id or 0)
    batches = [collate(pairs[i : i + BATCH]) for i in range(0, len(pairs), BATCH)]
    rate = matmul_rate(torch.float32)

    forward = sum(forward_flops_per_pair(config, *_lengths(p)) for p in pairs)
    ideal = forward * (1 + 3 * EPOCHS) / rate
    attention = sum(attention_flops_per_pair(config, *_lengths(p)) for p in pairs)
    attention_ideal = attention * (1 + 3 * EPOCHS) / rate

    gemm_time, attention_time, gemm_flops = 0.0, 0.0, 0.0
    for batch in batches:
        seconds, flops = linear_seconds(step_linears(config, batch.n_tokens, int(batch.targets.numel())))
        gemm_time, gemm_flops = gemm_time + seconds, gemm_flops + flops
        attention_time += attention_seconds(config, batch)
    gemm_rate = gemm_flops / gemm_time
    # the reference pass is a third of a training step's matmuls and attention (forward only)
    per_epoch = gemm_time + attention_time
    floor = per_epoch * EPOCHS + per_epoch / 3

    fresh, refill = first_touch_seconds_per_gib()
    params = sum(p.numel() for p in model.parameters()) * 4
    largest = max(batches, key=lambda b: b.n_tokens)
    activations = saved_activation_bytes(model, largest)
    working_set = 3 * params + activations  # gradients + two AdamW moments + saved activations
    warmup = working_set / 2**30 * (fresh - refill)

    print(
        "Roofline ceiling of bench/dpo_throughput.py's fp32 run: bundled SmolLM2-135M, 64 pairs, batch 8, "
        "2 epochs, fp32, one process, matmuls timed one shape at a time"
    )
    print(f"benchmark-shape matmul rate        {rate / 1e9:8.1f} GFLOP/s")
    print(
        f"the run's GEMMs, FLOP-weighted     {gemm_rate / 1e9:8.1f} GFLOP/s  ({gemm_rate / rate:.1%} of it)"
    )
    print(f"ideal run at the benchmark rate    {ideal:8.1f} s")
    print(f"GEMMs alone, whole run             {gemm_time * (EPOCHS + 1 / 3):8.1f} s")
    print(
        f"pair attention, whole run          {attention_time * (EPOCHS + 1 / 3):8.1f} s  "
        f"(its FLOPs at the matmul rate: {attention_ideal:.1f} s)"
    )
    print(f"first touch of fresh memory        {fresh:8.2f} s/GiB  (refilling touched memory: {refill:.2f})")
    print(
        f"working set                        {working_set / 2**30:8.2f} GiB  "
        f"(gradients + AdamW {3 * params / 2**30:.2f}, saved activations {activations / 2**30:.2f})"
    )
    print(f"its first touch                    {warmup:8.1f} s")
    best = ideal / (floor + warmup)
    print(
        f"best share with nothing else costing anything: {best:.1%} "
        f"(ideal {ideal:.1f} s / GEMMs + attention {floor:.1f} s + first touch {warmup:.1f} s)"
    )


if __name__ == "__main__":
    main()
