"""The RLHF reproduction: a reward model learns a checkable preference, and PPO (or RTO) against it raises
the property's frequency and the reward-model score over the base at a bounded KL.

The preference: a response that mentions the target (by default the letter ``z``, which the tiny
character-level tokenizer spells as one token and SmolLM2 rarely writes) beats one that does not.  The
frequency is measured on responses sampled from the policy with a fixed generator, so the base and the
trained policy are compared on the same draws of randomness.  Tests run it on the tiny models; the
benchmark ``bench/ppo_reproduction.py`` on the bundled model.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.engine.lm.data import prompt_token_ids
from training.engine.lm.models import load_model, load_tokenizer
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.rollout import SamplingConfig, sample, sequence_scores

LETTERS = "abcdefghijklmnopqrstuvwxy"


def property_rows(n: int, *, seed: int, target: str = "z", split: str = "train") -> list[dict[str, Any]]:
    """``n`` seeded preference rows: chosen mentions ``target``, rejected is a response without it."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = "write " + "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 4)))
        plain = "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 8)))
        cut = rng.randint(0, len(plain))
        rows.append(
            {
                "prompt": prompt,
                "chosen": plain[:cut] + target + plain[cut:],
                "rejected": "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 8))),
                "split": split,
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@dataclass(frozen=True)
class PolicyReading:
    """What a policy's sampled responses to the held-out prompts show."""

    frequency: float
    """Share of responses that mention the target."""
    score: float
    """Mean reward-model score."""
    length: float
    """Mean response length in tokens."""


@torch.no_grad()
def read_policy(
    model_spec: str,
    reward_model_spec: str,
    prompts: list[Any],
    *,
    target: str = "z",
    samples_per_prompt: int = 4,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    seed: int = 0,
) -> PolicyReading:
    """Sample ``samples_per_prompt`` responses per prompt (a fixed generator) and read them."""
    tokenizer = load_tokenizer(model_spec)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    policy = load_model(model_spec).eval()
    reward_model = load_reward_model(reward_model_spec, pad_token_id=pad)
    ids = [prompt_token_ids(tokenizer, p) for p in prompts for _ in range(samples_per_prompt)]
    batch = sample(
        policy,
        ids,
        SamplingConfig(max_new_tokens, temperature),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        generator=torch.Generator().manual_seed(seed),
    )
    lengths = batch.response_mask.sum(dim=1).tolist()
    texts = [tokenizer.decode(batch.responses[i, : lengths[i]].tolist()) for i in range(len(ids))]
    return PolicyReading(
        frequency=sum(target in t for t in texts) / len(texts),
        score=float(sequence_scores(reward_model, batch).mean()),
        length=sum(lengths) / len(lengths),
    )


def running_means(values: list[float], window: int) -> list[float]:
    """Mean of each value and the ``window − 1`` before it (fewer at the start)."""
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def batches_to_reach(scores: list[float], target: float, *, window: int = 3) -> int | None:
    """The first rollout batch (1-based) whose running mean score reaches ``target`` (None: never)."""
    for i, value in enumerate(running_means(scores, window)):
        if value >= target:
            return i + 1
    return None


@dataclass(frozen=True)
class RLHFReproduction:
    """The numbers the reproduction reports."""

    reward_model_accuracy: float
    """Held-out accuracy of the reward model."""
    base: PolicyReading
    ppo: PolicyReading
    rto: PolicyReading
    ppo_final_kl: float
    """``objective/kl`` of PPO's last rollout batch (nats per response)."""
    ppo_batches_to_target: int | None
    """Rollout batches PPO's running mean score took to reach half of PPO's own gain (the midpoint of its
    first and final running means): a sample-efficiency reading that does not hinge on the last batch, as
    reaching PPO's final value itself does (PPO gets there only at its end, and RTO, ahead most of the run,
    may meet it on the same batch)."""
    rto_batches_to_target: int | None
    """The same for RTO, against the same score."""


def reproduce(
    work: Path,
    *,
    seed: int = 0,
    model: str = "tiny",
    n_train: int = 96,
    n_test: int = 32,
    max_steps: int = 64,
    learning_rate: float = 1e-3,
    fit_learning_rate: float = 2e-3,
    dpo_beta: float = 0.5,
    max_new_tokens: int = 12,
    window: int = 3,
) -> RLHFReproduction:
    """Reward model and DPO on the property pairs (``fit_learning_rate``), then PPO and RTO from the same
    start with the same rollout settings (``learning_rate``); ``dpo_beta`` is RTO's β₁ (the tiny DPO
    model's token log-ratios are small, so the paper's 0.05 would leave its dense reward near zero)."""
    from training.engine.methods import train
    from training.engine.recipes.dpo_configs import DPOConfig
    from training.engine.recipes.ppo import PPOConfig
    from training.engine.recipes.reward_model import RewardModelConfig
    from training.engine.recipes.rto import RTOConfig

    work.mkdir(parents=True, exist_ok=True)
    rows = property_rows(n_train, seed=seed) + property_rows(n_test, seed=seed + 100, split="test")
    data = write_rows(work / "pairs.jsonl", rows)
    fit = {"train_file": data, "batch_size": 8, "epochs": 3, "learning_rate": fit_learning_rate, "seed": seed}
    reward = train(RewardModelConfig(model=model, output_dir=str(work / "reward"), **fit))
    dpo = train(
        DPOConfig(model=model, output_dir=str(work / "dpo"), beta=0.1, ref_cache_dir=str(work / "ref"), **fit)
    )
    reward_spec = f"local:{reward.final_model}"
    rollouts = dict(
        model=model,
        reward_model=reward_spec,
        train_file=data,
        batch_size=8,
        num_mini_batches=2,
        num_ppo_epochs=2,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        learning_rate=learning_rate,
        warmup_ratio=0.0,
        max_steps=max_steps,
        epochs=max_steps,
        seed=seed,
    )
    scores: dict[str, list[float]] = {"ppo": [], "rto": []}

    def keep(name: str):
        class Keep:
            def log(self, metrics: dict[str, float], step: int) -> None:
                batch = int(metrics.get("ppo/iteration", -1))
                if batch == len(scores[name]):
                    scores[name].append(metrics["objective/scores"])

        return Keep()

    ppo = train(PPOConfig(output_dir=str(work / "ppo"), **rollouts), callbacks=[keep("ppo")])
    rto = train(
        RTOConfig(
            output_dir=str(work / "rto"), dpo_model=f"local:{dpo.final_model}", dpo_beta=dpo_beta, **rollouts
        ),
        callbacks=[keep("rto")],
    )
    prompts = sorted({r["prompt"] for r in rows if r["split"] == "test"}, key=str)
    read = {"max_new_tokens": max_new_tokens, "seed": seed}
    ppo_means = running_means(scores["ppo"], window)
    target = (ppo_means[0] + ppo_means[-1]) / 2
    return RLHFReproduction(
        reward_model_accuracy=reward.eval_metrics["eval/accuracy"],
        base=read_policy(model, reward_spec, prompts, **read),
        ppo=read_policy(f"local:{ppo.final_model}", reward_spec, prompts, **read),
        rto=read_policy(f"local:{rto.final_model}", reward_spec, prompts, **read),
        ppo_final_kl=ppo.metrics["objective/kl"],
        ppo_batches_to_target=batches_to_reach(scores["ppo"], target, window=window),
        rto_batches_to_target=batches_to_reach(scores["rto"], target, window=window),
    )
