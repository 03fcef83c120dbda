"""The ppo and rto recipes on the runtime: TRL's metric names, exact resume from the middle of a rollout
batch, a cancel inside a rollout, LoRA, the job page's samples, refused settings, and the reproduction
(a reward model learns a checkable preference; PPO raises it at a bounded KL; RTO gets there sooner)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.engine.methods import METHODS, config_from_dict, train
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.recipes.ppo import PPOConfig, PPORecipe, ppo_plan, ppo_step_count, prompt_stream
from training.engine.recipes.reward_model import RewardModelConfig
from training.engine.recipes.rto import RTOConfig
from training.engine.rlhf_reproduction import property_rows, reproduce, write_rows
from training.engine.runtime.config import ConfigError
from training.engine.runtime.metrics import read_metrics

TRL_NAMES = {
    "objective/kl",
    "objective/entropy",
    "objective/non_score_reward",
    "objective/rlhf_reward",
    "objective/scores",
    "policy/approxkl_avg",
    "policy/clipfrac_avg",
    "policy/entropy_avg",
    "loss/policy_avg",
    "loss/value_avg",
    "val/clipfrac_avg",
    "val/ratio",
    "val/num_eos_tokens",
    "throughput/rollout_tokens_per_s",
    "throughput/update_tokens_per_s",
}
TIMING = ("throughput/", "time/")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """Property pairs and a reward model trained on them (shared by the tests of this module)."""
    work = tmp_path_factory.mktemp("ppo")
    data = write_rows(
        work / "pairs.jsonl", property_rows(24, seed=0) + property_rows(6, seed=9, split="test")
    )
    reward = train(
        RewardModelConfig(
            model="tiny", train_file=data, output_dir=str(work / "rm"), batch_size=8, learning_rate=2e-3
        )
    )
    return data, f"local:{reward.final_model}"


def ppo_config(task, out, **overrides) -> PPOConfig:
    data, reward = task
    fields = dict(
        model="tiny",
        reward_model=reward,
        train_file=data,
        output_dir=str(out),
        batch_size=2,
        num_mini_batches=2,
        num_ppo_epochs=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        max_steps=12,
        epochs=10,
        save_steps=2,
    )
    return PPOConfig(**{**fields, **overrides})


def logged(out) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for record in read_metrics(out / "metrics.jsonl"):
        record = dict(record)
        steps.setdefault(record.pop("step"), {}).update(record)
    return steps


def without_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith(TIMING)}


def test_the_plan_takes_every_prompt_of_a_batch_once_per_ppo_epoch(task, tmp_path):
    config = ppo_config(task, tmp_path, batch_size=3, num_mini_batches=2, max_steps=None, epochs=1)
    stream = prompt_stream(24, config)
    plan = ppo_plan(len(stream), config)
    assert len(plan) == ppo_step_count(24, config) == 4 * 2 * 2  # 24 prompts / batches of 6
    for batch in range(4):
        for epoch in range(2):
            steps = plan[(batch * 2 + epoch) * 2 : (batch * 2 + epoch) * 2 + 2]
            slots = sorted(s for step in steps for micro in step for s in micro)
            assert slots == list(range(batch * 6, batch * 6 + 6))
    assert sorted(stream) == list(range(24))


def test_a_run_logs_trls_names_and_writes_rollouts_and_held_out_generations(task, tmp_path):
    out = tmp_path / "out"
    result = train(ppo_config(task, out, eval_steps=4))
    assert result.status == "succeeded" and result.step == 12
    steps = logged(out)
    assert set(steps[1]) >= TRL_NAMES and {"eval/objective/scores", "eval/objective/kl"} <= set(steps[4])
    assert steps[1]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # the first batch: policy = reference
    assert steps[1]["val/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert [steps[s]["ppo/iteration"] for s in (1, 4, 5, 12)] == [0, 0, 1, 2]
    samples = out / "samples"
    base = json.loads((samples / "step-0" / "generations.json").read_text())["rows"]
    assert len(base) == 6 and {"prompt", "response", "score", "kl", "length", "ended"} <= set(base[0])
    assert all(abs(row["kl"]) < 1e-4 for row in base)  # the starting policy against itself
    rollouts = json.loads((samples / "step-5" / "rollouts.json").read_text())
    assert rollouts["rollout_batch"] == 1 and len(rollouts["rows"]) == 4
    model = AutoModelForCausalLM.from_pretrained(result.final_model)
    assert model.config.architectures == ["LlamaForCausalLM"]
    assert (out / "checkpoint-12" / "value_model" / "model.safetensors").is_file()


def test_resume_from_the_middle_of_a_rollout_batch_repeats_the_uninterrupted_run(task, tmp_path):
    whole = tmp_path / "whole"
    train(ppo_config(task, whole))
    parted = tmp_path / "parted"
    seen: list[int] = []

    class Count:
        def log(self, metrics, step):
            seen.append(step)

    first = train(ppo_config(task, parted), callbacks=[Count()], should_cancel=lambda: len(seen) >= 6)
    assert first.status == "cancelled" and first.step == 6  # batch 1, its second of four steps
    second = train(ppo_config(task, parted), resume=True)
    assert second.status == "succeeded" and second.step == 12
    a, b = logged(whole), logged(parted)
    for step in range(1, 13):
        assert without_timing(b[step]) == pytest.approx(without_timing(a[step]), rel=1e-5, abs=1e-6), step


def test_a_cancel_inside_a_rollout_stops_between_its_forward_passes(task, tmp_path):
    config = ppo_config(task, tmp_path / "out")
    recipe = PPORecipe(config)
    collect, inside = recipe.collect, {"batch": None}

    def watched(index):
        inside["batch"] = index
        return collect(index)

    recipe.collect = watched
    result = train(config, recipe=recipe, should_cancel=lambda: inside["batch"] == 2)
    assert result.status == "cancelled" and result.step == 8  # batch 2's rollout never finished
    assert result.last_checkpoint.name == "checkpoint-8"
    resumed = train(config, resume=True)
    assert resumed.status == "succeeded" and resumed.step == 12


def test_lora_ppo_trains_the_adapter_and_exports_a_merged_model(task, tmp_path):
    result = train(ppo_config(task, tmp_path / "out", lora=True, lora_r=4, max_steps=4))
    assert (result.last_checkpoint / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(result.final_model)
    assert not any("lora" in name for name in merged.state_dict())


def test_refused_settings_name_their_field(task, tmp_path):
    with pytest.raises(ConfigError, match="top_p"):
        ppo_config(task, tmp_path, top_p=0)
    with pytest.raises(ConfigError, match="reward_model"):
        ppo_config(task, tmp_path, reward_model="nonsense:spec")
    with pytest.raises(ConfigError, match="lam"):
        ppo_config(task, tmp_path, lam=1.5)
    with pytest.raises(ConfigError, match="dpo_model"):
        config_from_dict({**_dict(ppo_config(task, tmp_path)), "method": "rto", "dpo_model": "nonsense:x"})
    assert METHODS["ppo"].model_kind == "causal_lm" and METHODS["rto"].config is RTOConfig


def _dict(config):
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def test_a_reward_model_of_another_vocabulary_is_refused_naming_the_field(task, tmp_path):
    data, _ = task
    other = train(
        RewardModelConfig(model="tiny", train_file=data, output_dir=str(tmp_path / "rm"), max_steps=1)
    )
    folder = other.final_model
    vocab = json.loads((folder / "tokenizer.json").read_text())
    vocab["model"]["vocab"] = {f"x{token}": i for token, i in vocab["model"]["vocab"].items()}
    (folder / "tokenizer.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="reward_model: .* another tokenizer"):
        train(ppo_config(task, tmp_path / "out", reward_model=f"local:{folder}"))


def test_rto_runs_on_a_finished_dpo_model_with_its_dense_reward(task, tmp_path):
    data, reward = task
    dpo = train(
        DPOConfig(
            model="tiny",
            train_file=data,
            output_dir=str(tmp_path / "dpo"),
            ref_cache_dir=str(tmp_path / "ref"),
            learning_rate=1e-3,
            batch_size=8,
        )
    )
    fields = {
        k: v for k, v in _dict(ppo_config(task, tmp_path / "rto", max_steps=8)).items() if k != "kl_coef"
    }
    config = config_from_dict({**fields, "method": "rto", "dpo_model": f"local:{dpo.final_model}"})
    result = train(config)
    steps = logged(tmp_path / "rto")
    assert result.status == "succeeded" and config.kl_coef == 0.01 and config.dpo_beta == 0.05
    assert "objective/dense_reward" in steps[1] and steps[1]["objective/dense_reward"] != 0
    # rlhf reward = score (β₃ = 1) + the KL penalty + the dense reward, as PPO's with one more term
    first = steps[1]
    assert first["objective/rlhf_reward"] == pytest.approx(
        first["objective/scores"] + first["objective/non_score_reward"], abs=1e-5
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_reproduction_ppo_raises_the_preferred_property_and_rto_gets_there_in_fewer_batches(tmp_path, seed):
    torch.manual_seed(seed)
    result = reproduce(tmp_path, seed=seed, max_steps=128, window=4, dpo_beta=1.0)
    assert result.reward_model_accuracy >= 0.9
    assert result.ppo.frequency > result.base.frequency + 0.15
    assert result.ppo.score > result.base.score
    assert result.ppo_final_kl < 15.0  # nats per response of ≤ 12 tokens
    assert result.rto_batches_to_target is not None
    assert result.rto_batches_to_target < result.ppo_batches_to_target
