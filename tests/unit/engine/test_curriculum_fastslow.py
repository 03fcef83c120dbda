"""Curry-DPO pair building and stages; fast-slow DPO's loss, swap rule and a short run."""

import json

import pytest
import torch

from training.engine.api import train
from training.engine.config import config_from_dict
from training.engine.curriculum import CurryDPOConfig, curriculum_pairs, stages
from training.engine.fastslow import FastSlowDPOConfig, fast_slow_loss, should_swap
from training.engine.metrics import read_metrics


def test_curriculum_pairs_top_against_each_lower_sorted_by_gap():
    rows = [{"prompt": "p", "responses": ["a", "b", "c", "d"], "ratings": [2, 9, 5, 1]}]
    pairs = curriculum_pairs(rows)
    assert [(gap, p["chosen"], p["rejected"]) for gap, p in pairs] == [
        (8.0, "b", "d"),
        (7.0, "b", "a"),
        (4.0, "b", "c"),
    ]
    assert [[p["rejected"] for p in s] for s in stages(pairs, 2)] == [["d", "a"], ["c"]]
    with pytest.raises(ValueError, match="ranked row 0"):
        curriculum_pairs([{"prompt": "p", "responses": ["a"], "ratings": [1]}])


def test_fast_slow_loss_and_swap_rule():
    loss = fast_slow_loss(torch.tensor(0.5), torch.tensor(0.8), chase_weight=0.1)
    assert float(loss) == pytest.approx(0.5 + 0.8 + 0.1 * 0.3)
    assert not should_swap(1, patience=2) and should_swap(2, patience=2)


def _ranked(make_rows, n):
    rows = []
    for i, row in enumerate(make_rows(n, seed=9)):
        rows.append(
            {
                "prompt": row["prompt"],
                "responses": [row["chosen"], row["rejected"], row["rejected"] + " " + row["chosen"].upper()],
                "ratings": [3, 1, 2],
                "split": "test" if i % 5 == 0 else "train",
            }
        )
    return rows


def test_iterative_curry_dpo_moves_the_reference_stage_by_stage(tmp_path, make_rows):
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _ranked(make_rows, 20)))
    config = config_from_dict(
        {
            "method": "curry_dpo",
            "model": "tiny",
            "train_file": str(data),
            "output_dir": str(tmp_path / "o"),
            "ref_cache_dir": str(tmp_path / "ref"),
            "learning_rate": 1e-3,
            "n_stages": 2,
            "batch_size": 8,
            "warmup_ratio": 0.0,
        }
    )
    assert isinstance(config, CurryDPOConfig)
    result = train(config)
    assert result.status == "succeeded"
    assert (tmp_path / "o" / "stage-0").is_dir() and (tmp_path / "o" / "stage-1").is_dir()
    assert result.last_checkpoint.parent.name == "stage-1"
    first_stage = read_metrics(tmp_path / "o" / "stage-1" / "metrics.jsonl")[0]
    # stage 1 starts from stage 0's model, which is also its reference: margins start at exactly zero
    assert first_stage["rewards/margins"] == 0.0
    assert "eval/rewards/accuracies" in result.eval_metrics


def _fast_slow_config(tmp_path, make_rows, output: str, **overrides) -> FastSlowDPOConfig:
    data = tmp_path / "d.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(24, seed=4)))
        (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_rows(12, seed=9)))
    settings = {
        "model": "tiny",
        "train_file": str(data),
        "eval_file": str(tmp_path / "e.jsonl"),
        "output_dir": str(tmp_path / output),
        "ref_cache_dir": str(tmp_path / "r"),
        "learning_rate": 1e-2,
        "lora_r": 4,
        "lora_dropout": 0.1,
        "batch_size": 4,
        "max_steps": 10,
        "epochs": 2,
        "warmup_ratio": 0.2,
        "lr_scheduler": "cosine",
        "chase_weight": 0.5,
        "fast_lr_ratio": 8.0,
        "eval_steps": 3,
        "save_steps": 4,
    }
    return FastSlowDPOConfig(**{**settings, **overrides})


def test_fast_slow_dpo_trains_two_adapters(tmp_path, make_rows):
    config = _fast_slow_config(tmp_path, make_rows, "o", max_steps=4, lora_dropout=0.0, swap_patience=1)
    result = train(config)
    assert result.step == 4
    metrics = read_metrics(tmp_path / "o" / "metrics.jsonl")
    assert metrics[0]["fast/loss"] == pytest.approx(metrics[0]["slow/loss"])  # both start as the base
    assert metrics[-1]["fast/loss"] != metrics[-1]["slow/loss"]
    for name in ("m1", "m2"):
        assert (result.last_checkpoint / name / "adapter_model.safetensors").is_file()
    assert (result.last_checkpoint / "fast_adapter.txt").read_text().strip() in {"m1", "m2"}


def test_fast_slow_dpo_resumes_exactly_with_roles_optimizer_and_rng(tmp_path, make_rows):
    full = train(_fast_slow_config(tmp_path, make_rows, "full"))
    calls = {"n": 0}

    def cancel_after_six():
        calls["n"] += 1
        return calls["n"] > 6

    cut = train(_fast_slow_config(tmp_path, make_rows, "cut"), should_cancel=cancel_after_six)
    assert cut.status == "cancelled" and cut.step == 6
    assert (tmp_path / "cut" / "checkpoint-4" / "m2" / "adapter_model.safetensors").is_file()
    assert cut.last_checkpoint.name == "checkpoint-6"
    resumed = train(_fast_slow_config(tmp_path, make_rows, "cut"), resume=True)
    assert resumed.status == "succeeded" and resumed.step == 10

    def comparable(path):
        return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in read_metrics(path)]

    a, b = comparable(tmp_path / "full" / "metrics.jsonl"), comparable(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 11))
    assert a == b
    assert a[-1]["fast_slow/swaps"] >= 1  # the roles changed hands, and resume carried them over
    assert {"eval/rewards/accuracies", "loss"} <= set(a[2]) and "eval/loss" not in a[3]
    assert full.eval_metrics == resumed.eval_metrics
    fast = (tmp_path / "full" / "checkpoint-10" / "fast_adapter.txt").read_text().strip()
    assert (tmp_path / "cut" / "checkpoint-10" / "fast_adapter.txt").read_text().strip() == fast


def test_non_iterative_curry_dpo_is_one_run_ordered_easy_to_hard(tmp_path, make_rows):
    rows = _ranked(make_rows, 10)
    for i, row in enumerate(rows):
        row["ratings"] = [10, 10 - (i % 4) - 1, 1]
        row["split"] = "train"
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = CurryDPOConfig(
        model="tiny",
        train_file=str(data),
        output_dir=str(tmp_path / "o"),
        ref_cache_dir=str(tmp_path / "r"),
        iterative=False,
        max_steps=1,
        save_final=False,
    )
    result = train(config)
    assert result.status == "succeeded" and not (tmp_path / "o" / "stage-1").exists()
    written = [
        json.loads(line)
        for line in (tmp_path / "o" / "curriculum" / "stage-0.jsonl").read_text().splitlines()
    ]
    assert len(written) == 20
    # the 10 pairs against the bottom response (gap 9) come first, then gaps 8, 7, 6 in turn
    assert all(p["rejected"] == r["responses"][2] for p, r in zip(written[:10], rows, strict=True))
