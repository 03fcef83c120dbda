"""The loop end to end on a tiny model: learning, robustness to flips, resume, cancel, NaN guard, LoRA."""

import json

import pytest
import torch

from training.engine.lm.models import load_tokenizer
from training.engine.methods import train
from training.engine.recipes.dpo import DPORecipe
from training.engine.recipes.dpo_configs import CREAMConfig, DPOConfig, RDPOConfig
from training.engine.runtime.checkpoint import latest_checkpoint
from training.engine.runtime.config import ConfigError
from training.engine.runtime.loop import NonFiniteError, prepare, run
from training.engine.runtime.metrics import read_metrics


def prepared_recipe(config):
    """The DPO recipe of ``config``, set up (model, pairs, reference log-probs) and not yet trained."""
    return prepare(DPORecipe(config), config)


FAST = {"warmup_ratio": 0.0, "lr_scheduler": "constant", "max_grad_norm": None, "epochs": 100}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def task(tmp_path, make_rows):
    """64 training pairs (30% flipped when asked) and 200 clean held-out pairs."""

    def build(flip=0.0):
        train_file = _write(tmp_path / f"train{flip}.jsonl", make_rows(64, seed=5, flip=flip))
        eval_file = _write(tmp_path / "test.jsonl", make_rows(200, seed=6))
        return {
            "model": "tiny",
            "train_file": train_file,
            "eval_file": eval_file,
            "ref_cache_dir": str(tmp_path / "ref"),
        }

    return build


class Recorder:
    def __init__(self):
        self.calls = []
        self.total = None

    def on_start(self, total_steps, start_step):
        self.total = (total_steps, start_step)

    def log(self, metrics, step):
        self.calls.append((step, dict(metrics)))


def test_fifty_steps_raise_heldout_implicit_accuracy_above_point_nine(task, tmp_path):
    rec = Recorder()
    config = DPOConfig(
        **task(), output_dir=str(tmp_path / "o"), learning_rate=1e-3, max_steps=50, eval_steps=50, **FAST
    )
    result = train(config, callbacks=[rec])
    assert result.status == "succeeded" and result.step == 50 and rec.total == (50, 0)
    assert result.eval_metrics["eval/rewards/accuracies"] > 0.9
    train_names = set(rec.calls[0][1])
    assert {
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
        "throughput/pairs_per_s",
        "throughput/tokens_per_s",
    } <= train_names
    assert (tmp_path / "o" / "checkpoint-50" / "model.safetensors").is_file()
    # The eval step's points arrive in the same call as its training points, so a live reader that has
    # seen step 50 cannot miss eval/… of step 50.
    assert [step for step, _ in rec.calls].count(50) == 1
    assert {"loss", "eval/rewards/accuracies"} <= set(rec.calls[-1][1])


def test_cream_with_zero_consistency_trains_like_dpo_on_the_swapped_pairs(tmp_path, make_rows):
    rows = make_rows(16, seed=7)
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    common = {
        "model": "tiny",
        "ref_cache_dir": str(tmp_path / "ref"),
        "learning_rate": 1e-3,
        "max_steps": 2,
        "logging_steps": 1,
    }
    losses = {}
    for name, cls, data in (
        ("cream", CREAMConfig, [{**r, "consistency": 0.0} for r in rows]),
        ("dpo", DPOConfig, swapped),
    ):
        rec = Recorder()
        config = cls(
            **common, train_file=_write(tmp_path / f"{name}.jsonl", data), output_dir=str(tmp_path / name)
        )
        assert train(config, callbacks=[rec]).status == "succeeded"
        losses[name] = [m["loss"] for _, m in rec.calls if "loss" in m]
    assert len(losses["cream"]) == 2
    assert losses["cream"] == pytest.approx(losses["dpo"], abs=1e-5)


def test_rdpo_beats_dpo_on_clean_heldout_pairs_with_thirty_percent_flips(task, tmp_path):
    data = task(flip=0.3)
    common = {**data, "learning_rate": 1e-3, "max_steps": 100, **FAST}
    dpo = train(DPOConfig(**common, output_dir=str(tmp_path / "dpo")))
    rdpo = train(RDPOConfig(**common, epsilon=0.3, output_dir=str(tmp_path / "rdpo")))
    dpo_acc = dpo.eval_metrics["eval/rewards/accuracies"]
    rdpo_acc = rdpo.eval_metrics["eval/rewards/accuracies"]
    assert rdpo_acc > dpo_acc, (rdpo_acc, dpo_acc)


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in rows]


def test_interrupted_and_resumed_run_reproduces_uninterrupted_metrics(task, tmp_path):
    common = {
        **task(),
        "learning_rate": 1e-3,
        "max_steps": 12,
        "eval_steps": 4,
        "epochs": 2,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.2,
        "save_steps": 5,
    }
    full = train(DPOConfig(**common, output_dir=str(tmp_path / "full")))
    seen = Recorder()
    cut = train(
        DPOConfig(**common, output_dir=str(tmp_path / "cut")),
        callbacks=[seen],
        should_cancel=lambda: bool(seen.calls) and seen.calls[-1][0] >= 7,
    )
    assert cut.status == "cancelled" and cut.step == 7
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-7"
    resumed = train(DPOConfig(**common, output_dir=str(tmp_path / "cut")), resume=True)
    assert resumed.status == "succeeded" and resumed.step == 12
    a = _comparable(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    b = _comparable(read_metrics(tmp_path / "cut" / "metrics.jsonl"))
    assert a == b
    assert full.eval_metrics == resumed.eval_metrics


def test_resume_refuses_a_checkpoint_written_by_a_run_with_another_step_plan(task, tmp_path):
    common = {**task(), "learning_rate": 1e-3, "max_steps": 4, "save_steps": 2, **FAST}
    train(DPOConfig(**common, output_dir=str(tmp_path / "o")))
    longer = DPOConfig(**{**common, "max_steps": 6}, output_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="written by a run of 4 steps, this config plans 6"):
        train(longer, resume=True)


def test_nan_guard_names_step_and_metric(task, tmp_path):
    config = DPOConfig(**task(), output_dir=str(tmp_path / "o"), learning_rate=1e-3, max_steps=3, **FAST)
    recipe = prepared_recipe(config)
    recipe.train_ref["chosen"][:] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 1: loss is nan"):
        run(recipe, config)


def test_reference_logps_are_cached_and_reused(task, tmp_path):
    data = task()
    first = prepared_recipe(DPOConfig(**data, output_dir=str(tmp_path / "a")))
    again = prepared_recipe(DPOConfig(**data, output_dir=str(tmp_path / "b")))
    shorter = prepared_recipe(DPOConfig(**data, output_dir=str(tmp_path / "c"), max_length=40))
    assert not first.ref_cached and again.ref_cached and not shorter.ref_cached
    torch.testing.assert_close(first.train_ref["chosen"], again.train_ref["chosen"])
    other_model = prepared_recipe(
        DPOConfig(**{**data, "model": "tiny:seed=1"}, output_dir=str(tmp_path / "d"))
    )
    assert not other_model.ref_cached


def test_a_reference_model_gives_its_own_logps_and_the_policy_still_starts_from_its_weights(task, tmp_path):
    data = task()
    own = prepared_recipe(DPOConfig(**{**data, "model": "tiny:seed=1"}, output_dir=str(tmp_path / "a")))
    other = prepared_recipe(DPOConfig(**data, output_dir=str(tmp_path / "b")))
    kept = prepared_recipe(
        DPOConfig(**{**data, "model": "tiny:seed=1"}, reference_model="tiny", output_dir=str(tmp_path / "c"))
    )
    for side in ("chosen", "rejected"):
        torch.testing.assert_close(kept.train_ref[side], other.train_ref[side])
        torch.testing.assert_close(kept.eval_ref[side], other.eval_ref[side])
        assert not torch.equal(kept.train_ref[side], own.train_ref[side])
    for mine, theirs in zip(kept.model.parameters(), own.model.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)  # the policy is still tiny:seed=1
    with pytest.raises(ConfigError, match="reference_model"):
        DPOConfig(**data, reference_model="  ", output_dir=str(tmp_path / "d"))


def test_lora_trains_only_the_adapter_and_reference_is_base(task, tmp_path):
    config = DPOConfig(
        **task(), output_dir=str(tmp_path / "o"), lora=True, lora_r=4, learning_rate=1e-2, max_steps=3, **FAST
    )
    recipe = prepared_recipe(config)
    base_before = {k: v.clone() for k, v in recipe.model.named_parameters() if "lora_" not in k}
    result = run(recipe, config)
    for name, param in recipe.model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad
        else:
            assert not param.requires_grad and param.grad is None
            torch.testing.assert_close(param, base_before[name], rtol=0, atol=0)
    assert (result.last_checkpoint / "adapter_model.safetensors").is_file()
    assert result.metrics["rewards/margins"] != 0.0
    assert load_tokenizer(f"local:{result.last_checkpoint}").chat_template


def test_full_finetune_gradients_reach_only_policy(task, tmp_path):
    config = DPOConfig(**task(), output_dir=str(tmp_path / "o"), learning_rate=1e-3, max_steps=1, **FAST)
    recipe = prepared_recipe(config)
    assert not recipe.train_ref["chosen"].requires_grad and not recipe.train_ref["rejected"].requires_grad
    run(recipe, config)
    assert all(p.requires_grad for p in recipe.model.parameters())


def test_bf16_autocast_runs_and_checkpoints_load_with_from_pretrained(task, tmp_path):
    from transformers import AutoModelForCausalLM

    config = DPOConfig(
        **task(), output_dir=str(tmp_path / "o"), learning_rate=1e-3, max_steps=2, precision="bf16", **FAST
    )
    result = train(config)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    loaded = AutoModelForCausalLM.from_pretrained(result.last_checkpoint)
    assert loaded.dtype == torch.float32


def test_parquet_export_with_split_column_trains(tmp_path, make_rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_rows(20, seed=8)
    for i, row in enumerate(rows):
        row["split"] = "test" if i < 5 else "train"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    config = DPOConfig(
        model="tiny",
        train_file=str(tmp_path / "d.parquet"),
        output_dir=str(tmp_path / "o"),
        ref_cache_dir=str(tmp_path / "r"),
        max_steps=1,
        save_final=False,
        **FAST,
    )
    result = train(config)
    assert result.step == 1 and result.last_checkpoint is None
    assert "eval/rewards/accuracies" in result.eval_metrics


def test_the_step_plan_stops_at_max_steps_however_many_epochs_are_asked(tmp_path):
    from training.engine.runtime.optim import step_plan

    def config(epochs):
        return DPOConfig(
            model="tiny",
            train_file="t.jsonl",
            output_dir=str(tmp_path),
            epochs=epochs,
            max_steps=7,
            batch_size=4,
        )

    assert step_plan(10, config(10**9)) == step_plan(10, config(4))
    assert len(step_plan(10, config(4))) == 7 and step_plan(10, config(4))[3] != step_plan(10, config(4))[0]


class StageRecorder:
    def __init__(self):
        self.stages = []

    def log(self, metrics, step):
        return None

    def on_stage(self, stage, done, total):
        self.stages.append((stage, done, total))


def test_a_run_tells_its_callbacks_it_loads_then_computes_the_reference_batch_by_batch(task, tmp_path):
    data = task()
    heard = StageRecorder()
    train(DPOConfig(**data, output_dir=str(tmp_path / "a"), max_steps=1, batch_size=16), callbacks=[heard])
    train_batches = [s for s in heard.stages if s[0] == "reference" and s[2] == 4]  # 64 pairs / 16
    assert heard.stages[0] == ("loading", 0, 0)
    assert [done for _, done, _ in train_batches] == [0, 1, 2, 3, 4]
    again = StageRecorder()  # the cached reference is read, not computed: no pass to report
    train(DPOConfig(**data, output_dir=str(tmp_path / "b"), max_steps=1, batch_size=16), callbacks=[again])
    assert again.stages == [("loading", 0, 0)]
