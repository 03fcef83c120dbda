"""bench/roofline_ceiling.py times the same matmuls the roofline counts as the run's necessary work."""

import sys
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from _engine_common import attention_flops_per_pair, forward_flops_per_pair  # noqa: E402
from roofline_ceiling import step_linears  # noqa: E402

CONFIG = SimpleNamespace(
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=500,
)


def test_step_linears_are_three_forwards_of_the_counted_matmuls():
    pairs = [(7, 5, 9), (3, 11, 2)]  # prompt, chosen, rejected tokens
    tokens = sum(sum(p) for p in pairs)
    targets = sum(c + r for _, c, r in pairs)
    counted = sum(forward_flops_per_pair(CONFIG, *p) for p in pairs)
    attention = sum(attention_flops_per_pair(CONFIG, *p) for p in pairs)
    linears = step_linears(CONFIG, tokens, targets)
    gemms = sum(3 * 2 * m * fan_in * fan_out * count for m, fan_in, fan_out, count in linears)
    assert attention > 0
    assert gemms == 3 * (counted - attention)


def test_roofline_rate_measures_every_cpu_matmul_path():
    import torch
    from _engine_common import matmul_rates

    rates = matmul_rates(torch.float32, seconds=0.05)
    assert "torch_matmul" in rates and all(r > 0 for r in rates.values())
    if torch.backends.mkldnn.is_available():
        assert "onednn" in rates  # the path the engine's linear layers take on CPU
