"""What stops a run between steps: a cancel inside the reference and evaluation passes, and a guard that
refuses every write once the run no longer owns its output folder (a job's attempt that was taken over)."""

import json

import pytest

from training.engine.methods import train
from training.engine.recipes.dpo import DPORecipe
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.runtime.checkpoint import latest_checkpoint
from training.engine.runtime.metrics import read_metrics

FAST = {"warmup_ratio": 0.0, "lr_scheduler": "constant", "max_grad_norm": None, "epochs": 100}


class NotOwner(Exception):
    pass


@pytest.fixture
def config(tmp_path, make_rows):
    def build(**overrides):
        rows = tmp_path / "train.jsonl"
        rows.write_text("".join(json.dumps(r) + "\n" for r in make_rows(64, seed=5)))
        held_out = tmp_path / "test.jsonl"
        held_out.write_text("".join(json.dumps(r) + "\n" for r in make_rows(200, seed=6)))
        fields = {
            "model": "tiny",
            "train_file": str(rows),
            "eval_file": str(held_out),
            "ref_cache_dir": str(tmp_path / "ref"),
            "output_dir": str(tmp_path / "out"),
            "learning_rate": 1e-3,
            "batch_size": 4,
            "max_steps": 8,
            "save_steps": 2,
            **FAST,
        }
        return DPOConfig(**{**fields, **overrides})

    return build


def test_a_cancel_during_the_reference_pass_stops_it_between_batches(config, tmp_path):
    calls = {"n": 0}

    def cancel_soon():
        calls["n"] += 1
        return calls["n"] > 3  # the fourth batch of the reference pass

    result = train(config(), should_cancel=cancel_soon)
    assert result.status == "cancelled" and result.step == 0 and result.last_checkpoint is None
    assert calls["n"] == 4  # not 16 train batches + 50 held-out batches, then the first step
    assert not list((tmp_path / "ref").glob("*.safetensors"))  # the abandoned pass cached nothing
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_a_cancel_during_an_evaluation_stops_it_and_keeps_the_steps_checkpoint(config, tmp_path):
    asked = {"stop": False}

    class CancelledWhileEvaluating(DPORecipe):
        def evaluate(self):
            asked["stop"] = True  # the user presses cancel as the evaluation begins
            return super().evaluate()

    run_config = config(eval_steps=3)
    result = train(
        run_config, recipe=CancelledWhileEvaluating(run_config), should_cancel=lambda: asked["stop"]
    )
    assert result.status == "cancelled" and result.step == 3
    assert latest_checkpoint(tmp_path / "out").name == "checkpoint-3"
    rows = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # step 3's metrics waited for its evaluation, never logged
    assert not any(key.startswith("eval/") for row in rows for key in row)


def test_a_guard_that_refuses_stops_every_write_of_the_run(config, tmp_path):
    owner = {"steps": 0}

    class Counter:
        def log(self, metrics, step):
            owner["steps"] = step

    def guard():
        if owner["steps"] >= 4:  # another attempt took the job over after step 4
            raise NotOwner

    with pytest.raises(NotOwner):
        train(config(eval_steps=None), callbacks=[Counter()], guard=guard)
    out = tmp_path / "out"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # checkpoint-4, refused, is gone
    assert not (out / "final").exists()
