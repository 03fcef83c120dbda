"""Cross-domain OFS / COFS (``training/engine/cross_domain.py``) on the tiny model: the linear combination
of LoRA modules, the settings' checks, the forgetting matrices and the A-then-B reproduction."""

import json

import pytest
import torch

from training.engine.cross_domain import (
    CrossDomainSettings,
    Domain,
    StreamCancelled,
    Watch,
    check_weights,
    cofs,
    reproduce,
    simplex_grid,
    split_domains,
)
from training.engine.lm.lora import add_weighted_deltas, attach_lora, lora_delta, merged_with_adapter
from training.engine.lm.models import load_model
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.runtime.config import ConfigError
from training.engine.runtime.metrics import read_metrics


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tiny runs are latency-bound, and on a shared 2-core machine a second thread
    only contends (the runs' numbers do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


QUICK = {"max_steps": 6, "checkpoint_every": 3, "batch_size": 8, "learning_rate": 2e-3}


def _random_adapter(folder, seed: int, r: int) -> None:
    """A tiny-model LoRA adapter with random A and B (peft starts B at zero, a delta of nothing)."""
    config = DPOConfig(
        model="tiny", train_file="x.jsonl", output_dir="x", lora=True, lora_r=r, lora_alpha=3.0
    )
    model = attach_lora(load_model("tiny"), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(folder)


def test_linear_combination_of_lora_modules_is_the_weighted_sum_of_their_merged_deltas(tmp_path):
    _random_adapter(tmp_path / "one", seed=1, r=4)
    _random_adapter(tmp_path / "two", seed=2, r=2)  # ranks may differ: deltas are full-size
    base = dict(load_model("tiny").named_parameters())
    merged = [
        dict(merged_with_adapter(load_model("tiny"), tmp_path / n).named_parameters()) for n in ("one", "two")
    ]
    deltas = [lora_delta(tmp_path / "one"), lora_delta(tmp_path / "two")]
    combined = dict(add_weighted_deltas(load_model("tiny"), deltas, [0.3, 0.7]).named_parameters())
    touched = 0
    for name, weight in base.items():
        expected = weight + 0.3 * (merged[0][name] - weight) + 0.7 * (merged[1][name] - weight)
        torch.testing.assert_close(combined[name], expected, rtol=0, atol=1e-6)
        if name in deltas[0]:
            touched += 1
            assert not torch.equal(combined[name], weight)
        else:
            assert torch.equal(combined[name], weight)  # what no adapter targets stays bit-identical
    assert touched == 2 * 4  # q, k, v, o of both layers
    with pytest.raises(ValueError, match="2 deltas but 1 weights"):
        add_weighted_deltas(load_model("tiny"), deltas, [1.0])


def test_settings_refuse_bad_weights_and_grid_naming_the_field():
    cases = {
        "weights\\[1\\]: must be a finite number ≥ 0, got -0.5": {"weights": (1.0, -0.5)},
        "weights\\[0\\]: must be a finite number ≥ 0, got nan": {"weights": (float("nan"), 1.0)},
        "weights\\[0\\]: must be > 0": {"weights": (0.0, 1.0)},
        "grid_step: must be 1/k": {"grid_step": 0.3},
        "validation_fraction": {"validation_fraction": 1.0},
        "learning_rate: must be a positive number": {"learning_rate": -1.0},  # the recipes' own checks
        "fast_lr_ratio: must be ≥ 1": {"fast_lr_ratio": 0.5},
    }
    for message, fields in cases.items():
        with pytest.raises(ConfigError, match=message):
            CrossDomainSettings(model="tiny", **fields)
    with pytest.raises(ConfigError, match="weights: expected 2 \\(one per domain\\), got 3"):
        check_weights((1.0, 1.0, 1.0), 2)


def test_cofs_refuses_a_weight_count_that_is_not_one_per_domain_before_training(tmp_path):
    settings = CrossDomainSettings(model="tiny", weights=(1.0,))
    with pytest.raises(ConfigError, match="weights: expected 2"):
        cofs([Domain("A", "a.jsonl"), Domain("B", "b.jsonl")], settings, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_domains_need_distinct_names(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ConfigError, match="names must be distinct"):
        split_domains(
            [Domain("A", str(tmp_path / "a.jsonl"))] * 2, CrossDomainSettings(model="tiny"), tmp_path
        )


def test_simplex_grid_holds_every_convex_combination_on_the_step():
    assert simplex_grid(1, 0.25) == [(1.0,)]
    assert simplex_grid(2, 0.25) == [(1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)]
    three = simplex_grid(3, 0.25)
    assert len(three) == 15 and len(set(three)) == 15 and all(sum(w) == 1 for w in three)


def test_forgetting_matrices_hold_every_domain_after_every_domain(tmp_path):
    heard = []
    result = reproduce(
        tmp_path, seed=0, n_train=24, n_test=8, watch=Watch(on_stage=lambda *s: heard.append(s)), **QUICK
    )
    assert heard == [(m, d) for m in ("sequential_dpo", "ofs", "cofs") for d in ("A", "B")]
    for matrix in (result.sequential, result.ofs, result.cofs):
        assert matrix.domains == ("A", "B")
        assert len(matrix.accuracy) == 2 and all(len(row) == 2 for row in matrix.accuracy)
        assert all(0 <= a <= 1 for row in matrix.accuracy for a in row)
    assert [len(w) for w in result.cofs.weights] == [1, 2] and all(sum(w) == 1 for w in result.cofs.weights)
    # OFS chains (B's module is a delta of A's kept model); COFS keeps every module on the original base
    assert result.ofs.modules[1].base.endswith("ofs/A/kept") and result.ofs.modules[0].base == "tiny"
    assert {m.base for m in result.cofs.modules} == {"tiny"}
    for module in result.cofs.modules:  # the kept module is the fast one of the best-evaluated checkpoint
        logged = [
            r for r in read_metrics(tmp_path / "cofs" / module.domain / "metrics.jsonl") if "eval/loss" in r
        ]
        assert [r["step"] for r in logged] == [3, 6]
        assert module.validation_accuracy == max(r["eval/rewards/accuracies"] for r in logged)
        assert module.adapter.startswith(str(tmp_path / "cofs" / module.domain / f"checkpoint-{module.step}"))
    after = result.after_last()
    assert set(after) == {"sequential_dpo", "ofs", "cofs"} and after["cofs"] == result.cofs.final()
    assert json.loads(json.dumps(result.to_dict()))["cofs"]["accuracy"] == [
        list(r) for r in result.cofs.accuracy
    ]


def test_a_cancel_stops_the_stream_at_the_stage_it_reaches(tmp_path):
    heard = []
    watch = Watch(on_stage=lambda *stage: heard.append(stage), should_cancel=lambda: len(heard) > 1)
    with pytest.raises(StreamCancelled):
        reproduce(tmp_path, seed=0, n_train=24, n_test=8, watch=watch, **QUICK)
    assert heard == [("sequential_dpo", "A"), ("sequential_dpo", "B")]


def test_cofs_with_given_weights_renormalizes_each_row_and_a_zero_weight_drops_a_module(tmp_path):
    result = reproduce(tmp_path / "w", seed=1, n_train=24, n_test=8, weights=(2.0, 0.0), **QUICK)
    assert result.cofs.weights == ((1.0,), (1.0, 0.0))
    # row 2 combines A's module at 1 and B's at 0: the same model as row 1, so the same accuracies
    assert result.cofs.accuracy[1] == result.cofs.accuracy[0]


# Measured before asserting (bench/cross_domain.py --seeds 0,…,11, default settings), A's held-out accuracy
# after B, sequential DPO → COFS: 0.34→0.94, 0.34→0.78, 0.38→0.88, 0.34→0.47, 0.47→0.91, 0.12→0.50,
# 0.28→0.72, 0.50→0.56, 0.34→0.75, 0.41→0.72, 0.47→0.72, 0.41→0.91: COFS ahead on all twelve (B pays:
# 0.31–0.91 for COFS against 0.84–0.97).  With every B loser mentioning z (conflict 1.0) seed 4 reversed
# (0.41 against 0.44), so the direction is asserted for the default conflict of 0.5 only.
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_trained_on_a_then_b_cofs_keeps_more_of_a_than_sequential_dpo(tmp_path, seed):
    after = reproduce(tmp_path, seed=seed).after_last()
    print(seed, after)
    assert after["cofs"]["A"] > after["sequential_dpo"]["A"]
