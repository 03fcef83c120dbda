"""The ``reward_model`` recipe: an explicit reward model (EXRM) trained with the Bradley-Terry loss.

A sequence-classification head (``num_labels=1``) on the causal LM (``lm/rewards.py``) scores each
response at its last token; pairs are packed prompt + chosen + rejected like the DPO recipe's, so the
shared prompt is computed once per pair.  No reference model.  The final model is a plain Hugging Face
folder that ``AutoModelForSequenceClassification.from_pretrained`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import TokenizedPair, read_rows, tokenize_rows
from training.engine.lm.logps import decoder_layers
from training.engine.lm.models import load_tokenizer
from training.engine.lm.rewards import load_reward_model, pair_rewards
from training.engine.objectives.reward import bradley_terry_losses, reward_metrics
from training.engine.recipes.dpo import link_model_files
from training.engine.recipes.dpo_configs import check_text_pair_fields
from training.engine.runtime.checkpoint import load_weights
from training.engine.runtime.config import RunConfig, require
from training.engine.runtime.device import autocast
from training.engine.runtime.memory import own_trainable_weights
from training.engine.runtime.optim import step_count, step_plan
from training.engine.runtime.recipe import MicroStep, RecipeBase, Stage

REWARD_KINDS = ("pairwise", "ranking")
"""Dataset kinds whose exports are whole-response preference pairs."""


@dataclass(frozen=True, kw_only=True)
class RewardModelConfig(RunConfig):
    """Reward model (Bradley-Terry): −log σ(r(y_w) − r(y_l)) with a scalar head on the causal LM."""

    method: ClassVar[str] = "reward_model"

    model: str
    """Causal LM to start from: ``bundled``, ``local:PATH``, ``hub:ORG/NAME`` or ``tiny[:opts]``."""
    train_file: str
    """Exported dataset (JSONL or Parquet, TRL preference rows); rows with ``split`` = test held out."""
    learning_rate: float = 1e-5
    """AdamW peak learning rate."""
    max_length: int | None = 512
    """Cap on prompt+response tokens per side (keep-start truncation); None = no cap."""
    token_budget: int | None = None
    """Most tokens in one packed row; None = the whole micro-batch in one row."""
    margin_per_strength: float = 0.0
    """Margin m·strength in −log σ(r_w − r_l − m·strength), from each row's judged ``strength`` (1–3;
    rows without one get no margin); 0 = no margin."""

    def __post_init__(self) -> None:
        check_text_pair_fields(self, super().__post_init__)
        require(
            isinstance(self.margin_per_strength, int | float) and self.margin_per_strength >= 0,
            "margin_per_strength",
            f"must be ≥ 0, got {self.margin_per_strength!r}",
        )


class RewardModelRecipe(RecipeBase):
    """Bradley-Terry training of a scalar head and every weight of the body."""

    unit: ClassVar[str] = "pairs"
    accepts: ClassVar[tuple[str, ...]] = REWARD_KINDS
    model_kind: ClassVar[str] = "reward_model"
    supports_distributed: ClassVar[bool] = True
    supports_fsdp: ClassVar[bool] = True

    def __init__(self, config: RewardModelConfig) -> None:
        self.config = config

    @classmethod
    def planned_steps(cls, config: RewardModelConfig, n_train_rows: int) -> int:
        return step_count(n_train_rows, config)

    def setup(self, device: torch.device) -> None:
        config = self.config
        self.tokenizer = load_tokenizer(config.model)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model = load_reward_model(config.model, pad_token_id=pad).to(device)
        own_trainable_weights(self.model)
        self.collator = PackingCollator(pad, config.token_budget, device)
        self.autocast = torch.bfloat16 if config.precision == "bf16" else None
        train_rows = read_rows(config.train_file, "train")
        eval_rows = read_rows(config.eval_file) if config.eval_file else read_rows(config.train_file, "test")
        self.train_pairs, report = tokenize_rows(train_rows, self.tokenizer, max_length=config.max_length)
        self.eval_pairs, eval_report = tokenize_rows(eval_rows, self.tokenizer, max_length=config.max_length)
        self.train_margins = self.margins(train_rows, self.train_pairs)
        self.eval_margins = self.margins(eval_rows, self.eval_pairs)
        if not self.train_pairs:
            raise ValueError(
                f"{config.train_file}: no training pair left after tokenization ({dict(report.dropped)})"
            )
        self.dropped = {f"train/{k}": v for k, v in report.dropped.items()}
        self.dropped.update({f"eval/{k}": v for k, v in eval_report.dropped.items()})
        self.model.train()

    def margins(self, rows: list[dict], pairs: list[TokenizedPair]) -> Tensor | None:
        """Per kept pair, ``margin_per_strength`` × its row's ``strength`` (0 without one); None when off."""
        scale = self.config.margin_per_strength
        if not scale:
            return None
        return torch.tensor([scale * float(rows[p.index].get("strength") or 0.0) for p in pairs])

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def stages(self) -> list[Stage]:
        return [Stage(step_plan(len(self.train_pairs), self.config), len(self.train_pairs))]

    def rewards(self, pairs: list[TokenizedPair]) -> tuple[Tensor, Tensor, int]:
        batch = self.collator(pairs)
        with autocast(self.collator.device, self.autocast):
            chosen, rejected = pair_rewards(self.model, batch)
        return chosen, rejected, batch.n_tokens

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        chosen, rejected, tokens = self.rewards([self.train_pairs[i] for i in positions])
        margin = None if self.train_margins is None else self.train_margins[positions].to(chosen.device)
        loss = bradley_terry_losses(chosen, rejected, margin).mean()
        (loss * scale).backward()
        return MicroStep(reward_metrics(chosen, rejected, loss), len(positions), tokens)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs:
            return {}
        self.model.eval()
        chosen, rejected = [], []
        for start in range(0, len(self.eval_pairs), self.config.batch_size):
            self.between_batches()
            c, r, _ = self.rewards(self.eval_pairs[start : start + self.config.batch_size])
            chosen.append(c)
            rejected.append(r)
        self.model.train()
        c, r = torch.cat(chosen), torch.cat(rejected)
        margin = None if self.eval_margins is None else self.eval_margins.to(c.device)
        return reward_metrics(c, r, bradley_terry_losses(c, r, margin).mean(), prefix="eval/")

    def fsdp_units(self) -> tuple[nn.Module, list[nn.Module]]:
        return self.model, decoder_layers(self.model.base_model)

    def save(self, folder: Path, state_dict: dict | None = None) -> None:
        self.model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
        self.tokenizer.save_pretrained(folder)

    def load(self, folder: Path) -> None:
        load_weights(self.model, folder)

    def export_final(self, checkpoint: Path, folder: Path) -> None:
        link_model_files(checkpoint, folder)

    def report(self) -> dict[str, Any]:
        return {"dropped": self.dropped}
