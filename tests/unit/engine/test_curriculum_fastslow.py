"""Curry-DPO pair building and stages; fast-slow DPO's loss, swap rule and a short run."""

import json

import pytest
import torch

from training.engine.methods import config_from_dict, train
from training.engine.recipes.curry_dpo import CurryDPOConfig, CurryDPORecipe, curriculum_pairs, stages
from training.engine.recipes.fast_slow_dpo import FastSlowDPOConfig, fast_slow_loss, should_swap
from training.engine.runtime.loop import prepare
from training.engine.runtime.metrics import read_metrics


class LastStep:
    """The last step a run logged (a cancel on a step, however often the runtime asks)."""

    step = 0

    def log(self, metrics, step):
        self.step = step


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


def _curry_config(tmp_path, make_rows, output="o", **overrides):
    data = tmp_path / "ranked.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in _ranked(make_rows, 20)))
    settings = {
        "method": "curry_dpo",
        "model": "tiny",
        "train_file": str(data),
        "output_dir": str(tmp_path / output),
        "ref_cache_dir": str(tmp_path / "ref"),
        "learning_rate": 1e-3,
        "n_stages": 2,
        "batch_size": 8,
        "warmup_ratio": 0.0,
    }
    return config_from_dict({**settings, **overrides})


def test_iterative_curry_dpo_moves_the_reference_stage_by_stage(tmp_path, make_rows):
    config = _curry_config(tmp_path, make_rows)
    assert isinstance(config, CurryDPOConfig)
    result = train(config)
    assert result.status == "succeeded"
    assert result.last_checkpoint.parent == tmp_path / "o"
    assert (result.final_model / "config.json").is_file()
    rows = read_metrics(tmp_path / "o" / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, len(rows) + 1)) and result.step == len(rows)  # global across stages
    stage_of = [r["curriculum/stage"] for r in rows]
    assert stage_of == sorted(stage_of) and set(stage_of) == {0.0, 1.0}
    first_of_stage_1 = rows[stage_of.index(1.0)]
    # stage 1 starts from stage 0's model, which is also its reference: margins start at exactly zero
    assert first_of_stage_1["rewards/margins"] == 0.0
    assert rows[0]["curriculum/gap"] >= rows[-1]["curriculum/gap"]  # easy (large gap) first
    assert "eval/rewards/accuracies" in rows[stage_of.index(1.0) - 1]  # each stage ends with an eval
    assert "eval/rewards/accuracies" in result.eval_metrics


def test_iterative_curry_dpo_resumed_inside_its_second_stage_reproduces_the_run(tmp_path, make_rows):
    train(_curry_config(tmp_path, make_rows, "full", epochs=2))
    seen = LastStep()
    config = _curry_config(tmp_path, make_rows, "cut", epochs=2)
    cut = train(config, callbacks=[seen], should_cancel=lambda: seen.step >= 6)
    assert cut.status == "cancelled" and cut.step == 6
    stages_done = {r["curriculum/stage"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")}
    assert stages_done == {0.0, 1.0}  # cancelled inside stage 1, whose reference the checkpoint holds
    resumed = train(_curry_config(tmp_path, make_rows, "cut", epochs=2), resume=True)
    assert resumed.status == "succeeded"

    def comparable(path):
        return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in read_metrics(path)]

    assert comparable(tmp_path / "full" / "metrics.jsonl") == comparable(tmp_path / "cut" / "metrics.jsonl")


def test_a_cancel_between_curry_stages_comes_before_the_next_stages_reference_pass(
    tmp_path, make_rows, monkeypatch
):
    passes = []
    real = CurryDPORecipe.stage_reference

    def counted(self, index):
        passes.append(index)
        return real(self, index)

    monkeypatch.setattr(CurryDPORecipe, "stage_reference", counted)
    seen = LastStep()  # stage 0 has 2 steps: the first check after step 2 is at the boundary
    cut = train(
        _curry_config(tmp_path, make_rows, "cut"), callbacks=[seen], should_cancel=lambda: seen.step >= 2
    )
    assert cut.status == "cancelled" and cut.step == 2 and cut.last_checkpoint.name == "checkpoint-2"
    assert passes == [0]  # stage 1's reference was never computed
    resumed = train(_curry_config(tmp_path, make_rows, "cut"), resume=True)
    assert resumed.status == "succeeded" and passes == [0, 0, 1]
    train(_curry_config(tmp_path, make_rows, "full"))
    strip = [
        {k: v for k, v in r.items() if not k.startswith("throughput/")}
        for r in read_metrics(tmp_path / "full" / "metrics.jsonl")
    ]
    assert strip == [
        {k: v for k, v in r.items() if not k.startswith("throughput/")}
        for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")
    ]


def test_curriculum_reads_a_ranking_versions_pair_export_keeping_the_top_pairs():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "rank_gap": 1, "rating_gap": None, "split": "train"},
        {"prompt": "p", "chosen": "a", "rejected": "c", "rank_gap": 2, "rating_gap": None, "split": "train"},
        {"prompt": "p", "chosen": "b", "rejected": "c", "rank_gap": 1, "rating_gap": None, "split": "train"},
        {"prompt": "q", "chosen": "x", "rejected": "y", "rank_gap": 1, "rating_gap": None, "split": "test"},
    ]
    pairs = curriculum_pairs(rows)
    assert [(gap, p["prompt"], p["chosen"], p["rejected"]) for gap, p in pairs] == [
        (2.0, "p", "a", "c"),
        (1.0, "p", "a", "b"),
        (1.0, "q", "x", "y"),
    ]
    assert all("rank_gap" not in p and "split" in p for _, p in pairs)
    rated = [{**row, "rating_gap": float(i + 1)} for i, row in enumerate(rows)]
    assert [gap for gap, _ in curriculum_pairs(rated)] == [4.0, 2.0, 1.0]  # rating gaps win when all have one
    with pytest.raises(ValueError, match="pair row 0: no rank_gap or rating_gap"):
        curriculum_pairs([{"prompt": "p", "chosen": "a", "rejected": "b"}])


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
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(result.final_model)  # the fast adapter merged: a plain model
    assert not any("lora_" in name for name, _ in final.named_parameters())


def test_fast_slow_dpo_resumes_exactly_with_roles_optimizer_and_rng(tmp_path, make_rows):
    full = train(_fast_slow_config(tmp_path, make_rows, "full"))
    seen = LastStep()
    cut = train(
        _fast_slow_config(tmp_path, make_rows, "cut"), callbacks=[seen], should_cancel=lambda: seen.step >= 6
    )
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
    ordered = curriculum_pairs(rows)
    assert len(ordered) == 20
    # the 10 pairs against the bottom response (gap 9) come first, then gaps 8, 7, 6 in turn
    assert all(p["rejected"] == r["responses"][2] for (_, p), r in zip(ordered[:10], rows, strict=True))
    recipe = prepare(CurryDPORecipe(config), config)
    (stage,) = recipe.stages()
    positions = [i for step in stage.plan for mb in step for i in mb]
    assert positions == sorted(positions)  # one stage, in curriculum order, not shuffled
    result = train(config)
    assert result.status == "succeeded" and result.step == 1 and result.final_model is None
