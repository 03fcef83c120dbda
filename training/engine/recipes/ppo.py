"""The ``ppo`` recipe: PPO against a frozen reward model, with a KL penalty to a frozen reference.

Each rollout batch samples one response per prompt from the policy (``lm/rollout.py``, KV cache, seeded
by the batch's index, so a resumed run draws the same responses), scores it with the reward model, and
turns the score and the per-token KL into token rewards, GAE advantages (whitened) and returns
(``objectives/ppo.py``).  Then ``num_ppo_epochs`` passes over the batch in ``num_mini_batches``
mini-batches each take one optimizer step of the runtime, on the clipped policy loss plus ``vf_coef`` times
the clipped value loss; the optimizer holds the policy's and the value model's weights.

The value model is a copy of the reward model (the sequence classifier's body and ``score`` head read at
every response position), as TRL and OpenRLHF do: its first estimates are on the scale of the scores it
must predict, and a separate body keeps the value loss's gradients out of the policy (a value head on the
policy would pull its weights towards whatever predicts the return, and with LoRA could only learn
through the adapter).  The reference is the policy's starting weights: the adapter disabled under LoRA,
else a frozen copy.

Step numbers count optimizer steps; one rollout batch spans ``num_ppo_epochs × num_mini_batches`` of them,
and every step reports its batch's ``objective/…`` metrics.  ``docs/methods.md`` ("PPO") has the settings.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from training.engine.lm.data import prompt_token_ids, read_rows
from training.engine.lm.lora import attach_lora
from training.engine.lm.models import ModelSpec, load_model, load_tokenizer
from training.engine.lm.policy_eval import Scored, greedy_scored, response_rows
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.rollout import (
    Batch,
    SamplingConfig,
    response_logprobs,
    response_values,
    sample,
    sequence_scores,
)
from training.engine.objectives.ppo import KLController, gae, kl_penalised_rewards, ppo_losses, whiten
from training.engine.recipes.dpo import TEXT_PAIR_KINDS, export_causal_lm
from training.engine.recipes.dpo_configs import LoraFields
from training.engine.runtime.checkpoint import load_weights
from training.engine.runtime.config import ConfigError, RunConfig, require, require_fraction, require_positive
from training.engine.runtime.device import autocast
from training.engine.runtime.memory import own_trainable_weights
from training.engine.runtime.recipe import MicroStep, RecipeBase, Stage

VALUE_MODEL = "value_model"
"""A checkpoint's sub-folder holding the value model."""
ROLLOUTS_FILE = "rollouts.json"
GENERATIONS_FILE = "generations.json"


@dataclass(frozen=True, kw_only=True)
class PPOConfig(LoraFields, RunConfig):
    """PPO: a policy trained on its own samples against a reward model, with a per-token KL penalty."""

    method: ClassVar[str] = "ppo"

    model: str
    """Policy to start from (and the reference): ``bundled``, ``local:PATH``, ``hub:ORG/NAME``, ``tiny``."""
    reward_model: str
    """Reward model that scores each response: a one-label sequence classifier (``local:PATH``)."""
    train_file: str
    """Prompts: an exported dataset (its prompts alone) or JSONL rows ``{"prompt": ...}``; rows with
    ``split`` = test are the held-out prompts."""
    value_model: str | None = None
    """Value model to start from; None = a copy of the reward model."""
    learning_rate: float = 3e-6
    """AdamW peak learning rate (policy and value model)."""
    batch_size: int = 8
    """Rollouts per micro-batch of an update (and per forward pass of a rollout)."""
    num_mini_batches: int = 1
    """Mini-batches (optimizer steps) per pass over a rollout batch; the rollout batch is
    batch_size × gradient_accumulation_steps × num_mini_batches prompts (TRL 0.11's PPOv2 arithmetic;
    TRL 1.x cuts per_device_train_batch_size × gradient_accumulation_steps into num_mini_batches)."""
    num_ppo_epochs: int = 4
    """Passes over each rollout batch."""
    epochs: int = 1
    """Passes over the prompts."""
    max_prompt_length: int = 256
    """Prompts longer than this (in tokens, with the chat template) are dropped."""
    max_new_tokens: int = 32
    """Most tokens per sampled response."""
    temperature: float = 0.7
    """Sampling temperature; log-probs are taken under the same temperature."""
    top_p: float = 1.0
    """Nucleus mass of sampling."""
    stop_at_eos: bool = True
    """End each response at its first EOS (off: every response runs max_new_tokens)."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of a response that never emits EOS (None = no penalty)."""
    kl_coef: float = 0.05
    """β_kl of the per-token penalty −β_kl·(log π − log π_ref) (the starting value when adaptive)."""
    kl_target: float | None = None
    """Adapt β_kl towards this KL per response (None = fixed β_kl)."""
    kl_horizon: int = 10_000
    """Horizon of the adaptive controller, in rollouts."""
    cliprange: float = 0.2
    """ε of the clipped policy ratio."""
    cliprange_value: float = 0.2
    """Clip range of the value update around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """λ of GAE."""
    whiten_rewards: bool = False
    """Whiten token rewards (scale only) before GAE."""
    rollouts_shown: int = 8
    """Rollouts of each batch written for the job page's table."""

    def __post_init__(self) -> None:
        for name in ("model", "reward_model"):
            try:
                ModelSpec.parse(getattr(self, name))
            except (ValueError, AttributeError) as exc:
                raise ConfigError(f"{name}: {exc}") from exc
        if self.value_model is not None:
            try:
                ModelSpec.parse(self.value_model)
            except ValueError as exc:
                raise ConfigError(f"value_model: {exc}") from exc
        super().__post_init__()
        self.check_lora()
        for name in ("num_mini_batches", "num_ppo_epochs", "max_prompt_length", "max_new_tokens"):
            require_positive(getattr(self, name), name, integer=True)
        require_positive(self.kl_horizon, "kl_horizon", integer=True)
        for name in ("temperature", "cliprange", "cliprange_value"):
            require_positive(getattr(self, name), name)
        require_positive(self.kl_target, "kl_target", allow_none=True)
        require(0 < self.top_p <= 1, "top_p", f"must lie in (0, 1], got {self.top_p!r}")
        require(self.kl_coef >= 0, "kl_coef", f"must be ≥ 0, got {self.kl_coef!r}")
        require(self.vf_coef >= 0, "vf_coef", f"must be ≥ 0, got {self.vf_coef!r}")
        require(0 <= self.gamma <= 1, "gamma", f"must lie in [0, 1], got {self.gamma!r}")
        require(0 <= self.lam <= 1, "lam", f"must lie in [0, 1], got {self.lam!r}")
        require(
            self.missing_eos_penalty is None or self.missing_eos_penalty >= 0,
            "missing_eos_penalty",
            f"must be ≥ 0, got {self.missing_eos_penalty!r}",
        )
        require(self.rollouts_shown >= 0, "rollouts_shown", f"must be ≥ 0, got {self.rollouts_shown!r}")
        require_fraction(self.warmup_ratio, "warmup_ratio")
        require(
            Path(self.train_file).suffix in {".jsonl", ".json", ".parquet"}, "train_file", "JSONL or Parquet"
        )

    @property
    def rollout_batch_size(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.stop_at_eos)


def ppo_step_count(n_prompts: int, config: PPOConfig) -> int:
    """Optimizer steps of ``ppo_plan`` without building it."""
    stream, size = config.epochs * n_prompts, config.rollout_batch_size
    per_batch = config.num_ppo_epochs * config.num_mini_batches
    rest = stream % size
    total = (stream // size) * per_batch + (config.num_ppo_epochs * min(config.num_mini_batches, rest))
    return min(total, config.max_steps) if config.max_steps else total


def prompt_stream(n_prompts: int, config: PPOConfig) -> list[int]:
    """Prompt positions in the order rollouts draw them: one seeded permutation per epoch."""
    order: list[int] = []
    for epoch in range(config.epochs):
        if config.shuffle:
            generator = torch.Generator().manual_seed(config.seed + epoch)
            order += torch.randperm(n_prompts, generator=generator).tolist()
        else:
            order += list(range(n_prompts))
        if config.max_steps and len(order) >= config.max_steps * config.rollout_batch_size:
            break
    return order


def ppo_plan(stream_length: int, config: PPOConfig) -> list[list[list[int]]]:
    """Every optimizer step's micro-batches of slots (positions in the prompt stream): for each rollout
    batch, ``num_ppo_epochs`` seeded shuffles of its slots cut into ``num_mini_batches`` mini-batches."""
    size = config.rollout_batch_size
    plan: list[list[list[int]]] = []
    for batch_index, start in enumerate(range(0, stream_length, size)):
        slots = np.arange(start, min(start + size, stream_length))
        for epoch in range(config.num_ppo_epochs):
            generator = torch.Generator().manual_seed(config.seed * 7919 + batch_index * 31 + epoch)
            shuffled = slots[torch.randperm(len(slots), generator=generator).numpy()]
            for mini in np.array_split(shuffled, min(config.num_mini_batches, len(slots))):
                mini = mini.tolist()
                plan.append([mini[i : i + config.batch_size] for i in range(0, len(mini), config.batch_size)])
                if config.max_steps and len(plan) == config.max_steps:
                    return plan
    return plan


@dataclass
class Prompt:
    text: Any
    ids: list[int]


@dataclass
class RolloutBatch:
    """One batch of rollouts and what the updates need of it."""

    index: int
    batch: Batch
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    scores: Tensor
    kl: Tensor
    """``[B]``: Σ_t (log π − log π_ref) per response."""
    prompts: list[int]
    """Positions of the batch's prompts in the prompt list."""
    metrics: dict[str, float] = field(default_factory=dict)

    TENSORS: ClassVar[tuple[str, ...]] = ("logprobs", "values", "advantages", "returns", "scores", "kl")

    def state(self) -> dict[str, Any]:
        b = self.batch
        state = {name: getattr(self, name).cpu() for name in self.TENSORS}
        state.update(
            index=self.index,
            prompts=self.prompts,
            metrics=self.metrics,
            query_response=b.query_response.cpu(),
            attention_mask=b.attention_mask.cpu(),
            prompt_width=b.prompt_width,
            response_mask=b.response_mask.cpu(),
            ended=b.ended.cpu(),
        )
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> RolloutBatch:
        batch = Batch(
            state["query_response"].to(device),
            state["attention_mask"].to(device),
            state["prompt_width"],
            state["response_mask"].to(device),
            state["ended"].to(device),
        )
        tensors = {name: state[name].to(device) for name in cls.TENSORS}
        return cls(state["index"], batch, prompts=state["prompts"], metrics=state["metrics"], **tensors)


def frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PPORecipe(RecipeBase):
    """PPO on a causal LM (full or LoRA) with a reward model and a value model initialised from it."""

    unit: ClassVar[str] = "rollouts"
    accepts: ClassVar[tuple[str, ...]] = TEXT_PAIR_KINDS
    writes_samples: ClassVar[bool] = True
    # On N processes every rank samples and scores the whole rollout batch (the same seeded draws, so the
    # same rollouts as one process) and the updates are sharded: see ``share_factor``.
    supports_distributed: ClassVar[bool] = True

    def __init__(self, config: PPOConfig) -> None:
        self.config = config
        self.rollout: RolloutBatch | None = None
        self.last_generations: list[dict] | None = None
        self.pending_rollouts = False
        self.update_seconds, self.update_tokens = 0.0, 0
        self.kl = KLController(config.kl_coef, target=config.kl_target, horizon=config.kl_horizon)

    @classmethod
    def planned_steps(cls, config: PPOConfig, n_train_rows: int) -> int:
        return ppo_step_count(n_train_rows, config)

    # --- setup -------------------------------------------------------------------------------------------

    def setup(self, device: torch.device) -> None:
        config = self.config
        self.device = device
        self.tokenizer = load_tokenizer(config.model)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self.check_tokenizer(config.reward_model, "reward_model")
        policy = load_model(config.model).to(device)
        if config.lora:
            self.reference = None
            self.policy = attach_lora(policy, config)
        else:
            own_trainable_weights(policy)
            self.reference = frozen(copy.deepcopy(policy))
            self.policy = policy
        reward_model = load_reward_model(config.reward_model, pad_token_id=self.pad_id)
        self.reward_model = frozen(reward_model.to(device))
        value_spec = config.value_model or config.reward_model
        self.value_model = load_reward_model(value_spec, pad_token_id=self.pad_id).to(device)
        own_trainable_weights(self.value_model)
        self.autocast = torch.bfloat16 if config.precision == "bf16" else None
        self.train_prompts, self.eval_prompts, self.dropped = self.load_prompts()
        self.stream = prompt_stream(len(self.train_prompts), config)
        self.setup_token_rewards()
        self.policy.train()
        self.value_model.train()

    def setup_token_rewards(self) -> None:
        """Load what ``token_rewards`` needs beyond the reference (RTO's DPO model)."""

    def check_tokenizer(self, spec: str, name: str) -> None:
        """A model that reads the policy's token ids must have the policy's vocabulary."""
        if load_tokenizer(spec).get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                f"{name}: {spec} has another tokenizer than the policy {self.config.model}; it would read "
                "the policy's token ids as other words (train it from the same base model)"
            )

    def load_prompts(self) -> tuple[list[Prompt], list[Prompt], dict[str, int]]:
        config = self.config
        train_rows = read_rows(config.train_file, "train")
        eval_rows = read_rows(config.eval_file) if config.eval_file else read_rows(config.train_file, "test")
        dropped: dict[str, int] = {}
        train = self.prompts_of(train_rows, "train", dropped)
        held_out = self.prompts_of(eval_rows, "eval", dropped)
        if not train:
            raise ValueError(f"{config.train_file}: no training prompt ({dropped or 'the file has none'})")
        return train, held_out, dropped

    def prompts_of(self, rows: list[dict], split: str, dropped: dict[str, int]) -> list[Prompt]:
        """The rows' distinct prompts, in order; a prompt over ``max_prompt_length`` tokens is dropped."""
        prompts, seen = [], set()
        for index, row in enumerate(rows):
            if "prompt" not in row:
                raise ValueError(f"{self.config.train_file}: row {index} ({split}) has no 'prompt' field")
            key = json.dumps(row["prompt"], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            ids = prompt_token_ids(self.tokenizer, row["prompt"])
            if len(ids) > self.config.max_prompt_length:
                reason = f"{split}/prompt_over_max_prompt_length"
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            prompts.append(Prompt(row["prompt"], ids))
        return prompts

    # --- rollouts ----------------------------------------------------------------------------------------

    def reference_logprobs(self, batch: Batch, temperature: float) -> Tensor:
        if self.reference is None:
            with self.policy.disable_adapter():
                return response_logprobs(self.policy, batch, temperature=temperature)[0]
        return response_logprobs(self.reference, batch, temperature=temperature)[0]

    score_weight: ClassVar[float] = 1.0
    """Factor of the reward-model score in the token rewards (RTO's β₃ overrides it)."""

    def dense_token_rewards(self, batch: Batch) -> Tensor | None:
        """``[B, T]`` token rewards besides the KL penalty and the score (RTO's DPO reward); None here."""
        return None

    def chunks(self, n: int) -> list[slice]:
        size = self.config.batch_size
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    @torch.no_grad()
    def collect(self, index: int) -> RolloutBatch:
        """Sample, score and evaluate rollout batch ``index`` with the current weights."""
        config = self.config
        tick = time.perf_counter()
        size = config.rollout_batch_size
        slots = range(index * size, min((index + 1) * size, len(self.stream)))
        prompt_positions = [self.stream[s] for s in slots]
        generator = torch.Generator(device=self.device).manual_seed(config.seed * 1_000_003 + index)
        self.policy.eval()
        with autocast(self.device, self.autocast):
            batch = sample(
                self.policy,
                [self.train_prompts[p].ids for p in prompt_positions],
                config.sampling,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                generator=generator,
            )
            parts: dict[str, list[Tensor]] = {k: [] for k in ("logprobs", "ref", "values", "scores", "dense")}
            for rows in self.chunks(len(prompt_positions)):
                self.between_batches()
                part = batch.rows(range(rows.start, rows.stop))
                parts["logprobs"].append(part.sampled_logprobs)  # what a policy forward would give
                parts["ref"].append(self.reference_logprobs(part, config.temperature))
                parts["values"].append(response_values(self.value_model, part))
                parts["scores"].append(sequence_scores(self.reward_model, part))
                dense = self.dense_token_rewards(part)
                if dense is not None:
                    parts["dense"].append(dense)
        self.policy.train()
        logprobs, ref, values, scores = (torch.cat(parts[k]) for k in ("logprobs", "ref", "values", "scores"))
        mask = batch.response_mask
        if config.missing_eos_penalty is not None:
            scores = scores - config.missing_eos_penalty * (~batch.ended).float()
        weighted = self.score_weight * scores
        rewards, non_score = kl_penalised_rewards(logprobs, ref, weighted, mask, self.kl.value)
        extra = {}
        if parts["dense"]:
            dense = torch.cat(parts["dense"]) * mask
            rewards, non_score = rewards + dense, non_score + dense
            extra["objective/dense_reward"] = float(dense.sum(dim=1).mean())
        extra["objective/rlhf_reward"] = float(rewards.sum(dim=1).mean())
        if config.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, gamma=config.gamma, lam=config.lam)
        advantages = whiten(advantages, mask)
        kl = ((logprobs - ref) * mask).sum(dim=1)
        elapsed = time.perf_counter() - tick
        generated = int(mask.sum())
        metrics = {
            "objective/kl": float(kl.mean()),
            "objective/entropy": float((-logprobs * mask).sum(dim=1).mean()),
            "objective/non_score_reward": float(non_score.sum(dim=1).mean()),
            "objective/scores": float(scores.mean()),
            "objective/kl_coef": self.kl.value,
            "val/num_eos_tokens": float(batch.ended.sum()),
            "val/response_length": generated / len(prompt_positions),
            "throughput/rollout_tokens_per_s": generated / elapsed,
            "time/rollout_s": elapsed,
            "ppo/iteration": float(index),
            **extra,
        }
        self.kl.update(float(kl.mean()), len(prompt_positions))
        self.pending_rollouts = True
        return RolloutBatch(
            index, batch, logprobs, values, advantages, returns, scores, kl, prompt_positions, metrics
        )

    # --- the runtime's calls -----------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        trainable = [p for m in (self.policy, self.value_model) for p in m.parameters() if p.requires_grad]
        return [{"params": trainable}]

    def stages(self) -> list[Stage]:
        plan = ppo_plan(len(self.stream), self.config)
        return [Stage(plan, len(self.train_prompts) * self.config.num_ppo_epochs)]

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        config = self.config
        index = positions[0] // config.rollout_batch_size
        if self.rollout is None or self.rollout.index != index:
            self.rollout = self.collect(index)
            self.update_seconds, self.update_tokens = 0.0, 0
        tick = time.perf_counter()
        rows = torch.tensor([p - index * config.rollout_batch_size for p in positions], device=self.device)
        old = self.rollout
        part = old.batch.rows(rows)
        with autocast(self.device, self.autocast):
            logprobs, entropy = response_logprobs(
                self.policy, part, temperature=config.temperature, with_entropy=True
            )
            values = response_values(self.value_model, part)
        out = ppo_losses(
            new_logprobs=logprobs,
            old_logprobs=old.logprobs[rows],
            advantages=old.advantages[rows],
            new_values=values,
            old_values=old.values[rows],
            returns=old.returns[rows],
            mask=part.response_mask,
            cliprange=config.cliprange,
            cliprange_value=config.cliprange_value,
            vf_coef=config.vf_coef,
            entropy=entropy,
        )
        factor = self.share_factor(positions, part.response_mask)
        (out.loss * (scale * factor)).backward()
        tokens = int(part.attention_mask.sum())
        self.update_seconds += time.perf_counter() - tick
        self.update_tokens += tokens
        metrics = {"loss": float(out.loss.detach()), **out.stats}
        return MicroStep({k: v * factor for k, v in metrics.items()}, len(positions), tokens)

    def share_factor(self, positions: list[int], mask: Tensor) -> float:
        """The losses are means over the micro-batch's response tokens; the runtime weighs a rank's share
        by its examples.  ``(T_share / T_whole) · (|whole| / |share|)`` turns the share's token mean into its
        part of the whole micro-batch's token mean, so N ranks add up to one process (1.0 on one)."""
        whole = list(self.micro_batch) or positions
        if len(whole) == len(positions):
            return 1.0
        start = self.rollout.index * self.config.rollout_batch_size
        rows = torch.tensor([p - start for p in whole], device=self.device)
        whole_tokens = float(self.rollout.batch.response_mask[rows].sum())
        share_tokens = float(mask.sum())
        if not whole_tokens or not share_tokens:
            return 1.0
        return share_tokens / whole_tokens * len(whole) / len(positions)

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        extra = dict(self.rollout.metrics)
        if self.update_seconds:
            extra["throughput/update_tokens_per_s"] = self.update_tokens / self.update_seconds
        self.update_seconds, self.update_tokens = 0.0, 0
        return extra

    @torch.no_grad()
    def held_out_generations(self) -> list[dict]:
        """Greedy responses to the held-out prompts with their scores and KL to the reference."""
        rows: list[dict] = []
        prompts = self.eval_prompts
        self.policy.eval()
        with autocast(self.device, self.autocast):
            generations = greedy_scored(
                self.policy,
                [p.ids for p in prompts],
                reward_model=self.reward_model,
                reference=lambda batch: self.reference_logprobs(batch, 1.0),
                max_new_tokens=self.config.max_new_tokens,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                stop_at_eos=self.config.stop_at_eos,
                batch_size=self.config.batch_size,
                between_batches=self.between_batches,
            )
            for chunk, scored in zip(self.chunks(len(prompts)), generations, strict=True):
                rows += self.describe(
                    scored.batch, [p.text for p in prompts[chunk]], scored.scores, scored.kl
                )
        self.policy.train()
        return rows

    def describe(self, batch: Batch, prompts: list[Any], scores: Tensor, kl: Tensor) -> list[dict]:
        """Rows of the job page's tables: prompt, decoded response, score, KL, length, ended."""
        rows = response_rows(self.tokenizer, Scored(batch, scores, kl))
        return [{"prompt": prompt, **row} for prompt, row in zip(prompts, rows, strict=True)]

    def evaluate(self) -> dict[str, float]:
        if not self.eval_prompts:
            return {}
        rows = self.held_out_generations()
        self.last_generations = rows
        n = len(rows)
        return {
            "eval/objective/scores": sum(r["score"] for r in rows) / n,
            "eval/objective/kl": sum(r["kl"] for r in rows) / n,
            "eval/response_length": sum(r["length"] for r in rows) / n,
            "eval/eos_rate": sum(r["ended"] for r in rows) / n,
        }

    def samples_due(self) -> bool:
        return self.pending_rollouts

    def write_samples(self, folder: Path) -> None:
        """``rollouts.json``: the latest rollout batch's first ``rollouts_shown`` rollouts;
        ``generations.json``: the held-out generations of the latest evaluation (before the first step:
        the starting policy's, the "before" of the evaluation page)."""
        if self.rollout is None and self.last_generations is None and self.eval_prompts:
            self.last_generations = self.held_out_generations()
        if self.rollout is not None and self.pending_rollouts:
            shown = min(self.config.rollouts_shown, len(self.rollout.prompts))
            old = self.rollout
            rows = self.describe(
                old.batch.rows(range(shown)),
                [self.train_prompts[p].text for p in old.prompts[:shown]],
                old.scores[:shown],
                old.kl[:shown],
            )
            payload = {"rollout_batch": old.index, "rows": rows}
            (folder / ROLLOUTS_FILE).write_text(json.dumps(payload, ensure_ascii=False, indent=1))
        if self.last_generations is not None:
            (folder / GENERATIONS_FILE).write_text(
                json.dumps({"rows": self.last_generations}, ensure_ascii=False, indent=1)
            )
        self.pending_rollouts = False
        self.last_generations = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "kl_coef": self.kl.value,
            "rollout": self.rollout.state() if self.rollout is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "kl_coef" in state:
            self.kl.value = state["kl_coef"]
        if state.get("rollout") is not None:
            self.rollout = RolloutBatch.from_state(state["rollout"], self.device)
            self.update_seconds, self.update_tokens = 0.0, 0

    def save(self, folder: Path) -> None:
        self.policy.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        self.value_model.save_pretrained(folder / VALUE_MODEL, safe_serialization=True)

    def load(self, folder: Path) -> None:
        load_weights(self.policy, folder)
        load_weights(self.value_model, Path(folder) / VALUE_MODEL)

    def export_final(self, checkpoint: Path, folder: Path) -> None:
        export_causal_lm(self.config, self.tokenizer, checkpoint, folder)

    def report(self) -> dict[str, Any]:
        return {"dropped": self.dropped}
