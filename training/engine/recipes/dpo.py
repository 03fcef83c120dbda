"""The ``dpo`` recipe: every pairwise preference method on a causal LM (DPO, cDPO, rDPO, CREAM, IPO, hinge,
sigmoid-norm, flex, the SFT add-on, Step-DPO and Mask-DPO, whose token masks come with the rows, as does
CREAM's per-pair consistency).

Reference log-probs come from the cache (computed once from the starting weights, before any update), so
no second model copy is ever held.  Pairs are packed prompt + chosen + rejected (``lm/collate.py``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from training.engine.lm.collate import PackingCollator
from training.engine.lm.cpu_linear import route_linears
from training.engine.lm.data import TokenizedPair, read_rows, tokenize_rows
from training.engine.lm.logps import (
    decoder_and_head,
    decoder_layers,
    segment_lengths,
    segment_sums,
    token_logps,
)
from training.engine.lm.lora import attach_lora, merged_with_adapter
from training.engine.lm.models import load_model, load_tokenizer, weights_fingerprint
from training.engine.lm.policy_eval import same_vocabulary
from training.engine.lm.refcache import cached_reference, default_cache_dir
from training.engine.objectives.preference import LossTerm, PairLogps, combine, pair_metrics
from training.engine.recipes.dpo_configs import PreferenceConfig
from training.engine.runtime.checkpoint import load_weights
from training.engine.runtime.device import autocast
from training.engine.runtime.memory import own_trainable_weights
from training.engine.runtime.optim import step_count, step_plan
from training.engine.runtime.recipe import MicroStep, RecipeBase, Stage

TEXT_PAIR_KINDS = ("pairwise", "ranking", "stepwise", "factuality")
"""Dataset kinds (a project's task type) whose exports are text preference pairs."""


def pair_logps(model: nn.Module, batch, ref_chosen: Tensor, ref_rejected: Tensor) -> PairLogps:
    """Policy sums of a packed batch next to the given reference sums, with the pairs' consistency."""
    pc, pr = segment_sums(token_logps(model, batch), batch)
    cl, rl = segment_lengths(batch)
    return PairLogps(pc, pr, ref_chosen.to(pc.device), ref_rejected.to(pc.device), cl, rl, batch.consistency)


@torch.no_grad()
def evaluate_pairs(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    ref: dict[str, Tensor],
    collator: PackingCollator,
    terms: Sequence[LossTerm],
    *,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    between_batches: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """``eval/…`` metrics over all pairs: loss, rewards (accuracy counts h > 0 only), log-probs;
    ``between_batches()`` runs before each batch (it may raise to stop the pass)."""
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    chosen_r, rejected_r, logp_c, logp_r = [], [], [], []
    for start in range(0, len(pairs), batch_size):
        between_batches()
        idx = slice(start, start + batch_size)
        batch = collator(pairs[idx])
        with autocast(batch.input_ids.device, autocast_dtype):
            lp = pair_logps(model, batch, ref["chosen"][idx], ref["rejected"][idx])
        loss, out = combine(terms, lp)
        loss_sum += float(loss) * batch.n_pairs
        chosen_r.append(out.chosen_rewards)
        rejected_r.append(out.rejected_rewards)
        logp_c.append(lp.policy_chosen)
        logp_r.append(lp.policy_rejected)
    model.train(was_training)
    cr, rr = torch.cat(chosen_r), torch.cat(rejected_r)
    return {
        "eval/loss": loss_sum / len(pairs),
        "eval/rewards/chosen": float(cr.mean()),
        "eval/rewards/rejected": float(rr.mean()),
        "eval/rewards/margins": float((cr - rr).mean()),
        "eval/rewards/accuracies": float((cr > rr).float().mean()),
        "eval/logps/chosen": float(torch.cat(logp_c).mean()),
        "eval/logps/rejected": float(torch.cat(logp_r).mean()),
    }


class DPORecipe(RecipeBase):
    """Pairwise preference training on a causal LM: full fine-tuning or one LoRA adapter."""

    unit: ClassVar[str] = "pairs"
    accepts: ClassVar[tuple[str, ...]] = TEXT_PAIR_KINDS
    supports_distributed: ClassVar[bool] = True
    supports_fsdp: ClassVar[bool] = True

    def __init__(self, config: PreferenceConfig, *, model: nn.Module | None = None) -> None:
        self.config = config
        self.model = model
        self.terms = config.objective_terms()

    @classmethod
    def planned_steps(cls, config: PreferenceConfig, n_train_rows: int) -> int:
        """Optimizer steps a run on ``n_train_rows`` rows plans (before rows too long are dropped)."""
        return step_count(n_train_rows, config)

    # --- setup -----------------------------------------------------------------------------------------

    def setup(self, device: torch.device) -> None:
        """Load model, tokenizer and pairs; the reference log-probs (cache) from the starting weights."""
        config = self.config
        self.tokenizer = load_tokenizer(config.model)
        model = (self.model if self.model is not None else load_model(config.model)).to(device)
        route_linears(model)
        if not self.trains_adapters:
            own_trainable_weights(model)
        self.collator = PackingCollator(self.tokenizer.pad_token_id or 0, config.token_budget, device)
        self.train_pairs, self.eval_pairs, self.dropped = self.load_pairs()
        self.autocast = torch.bfloat16 if config.precision == "bf16" else None
        self.model = model
        self.setup_reference()
        self.model = self.wrap_trainable(model)
        self.model.train()

    def load_pairs(self) -> tuple[list[TokenizedPair], list[TokenizedPair], dict[str, int]]:
        """Tokenized train and held-out pairs, and the rows tokenization dropped, by split and reason."""
        config = self.config
        train_rows = read_rows(config.train_file, "train")
        eval_rows = read_rows(config.eval_file) if config.eval_file else read_rows(config.train_file, "test")
        return self.tokenize(train_rows, eval_rows)

    def tokenize(self, train_rows: list[dict], eval_rows: list[dict]):
        max_length = self.config.max_length
        train_pairs, report = tokenize_rows(train_rows, self.tokenizer, max_length=max_length)
        eval_pairs, eval_report = tokenize_rows(eval_rows, self.tokenizer, max_length=max_length)
        if not train_pairs:
            raise ValueError(
                f"{self.config.train_file}: no training pair left after tokenization ({dict(report.dropped)})"
            )
        dropped = {f"train/{k}": v for k, v in report.dropped.items()}
        dropped.update({f"eval/{k}": v for k, v in eval_report.dropped.items()})
        return train_pairs, eval_pairs, dropped

    @property
    def trains_adapters(self) -> bool:
        """Whether the optimizer trains adapters on a frozen base (else every weight)."""
        return self.config.lora

    def setup_reference(self) -> None:
        """Reference log-probs of every train and held-out pair: from the starting weights, or from the
        config's ``reference_model`` (loaded for this alone, then dropped)."""
        scorer = None
        if spec := self.config.reference_model:
            same_vocabulary(self.tokenizer, {f"reference_model {spec}": load_tokenizer(spec)})
            scorer = load_model(spec).to(next(self.model.parameters()).device).eval()
        self.train_ref, self.ref_cached = self.reference(self.train_pairs, scorer)
        self.eval_ref = self.reference(self.eval_pairs, scorer)[0] if self.eval_pairs else {}

    def reference(
        self, pairs: Sequence[TokenizedPair], scorer: nn.Module | None = None
    ) -> tuple[dict[str, Tensor], bool]:
        """The pairs' log-probs under ``scorer`` (default: the model's current weights), from the cache or
        computed once."""
        config = self.config
        cache_dir = Path(config.ref_cache_dir) if config.ref_cache_dir else default_cache_dir()
        scorer = self.model if scorer is None else scorer
        return cached_reference(
            scorer,
            weights_fingerprint(scorer),
            pairs,
            self.collator,
            batch_size=config.batch_size,
            precision=config.precision,
            cache_dir=cache_dir,
            between_batches=self.between_batches,
            dist=self.dist,
            progress=lambda done, total: self.report_stage("reference", done, total),
        )

    def wrap_trainable(self, model: nn.Module) -> nn.Module:
        """The model the optimizer trains: a LoRA-wrapped copy of the base, or the base itself."""
        return attach_lora(model, self.config) if self.config.lora else model

    # --- the runtime's calls -----------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def stages(self) -> list[Stage]:
        return [Stage(step_plan(len(self.train_pairs), self.config), len(self.train_pairs))]

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        batch = self.collator([self.train_pairs[i] for i in positions])
        loss, metrics = self.pair_loss(batch, positions)
        (loss * scale).backward()
        return MicroStep(metrics, len(positions), batch.n_tokens)

    def pair_loss(self, batch, positions: list[int]) -> tuple[Tensor, dict[str, float]]:
        """The combined objective of a packed batch of training pairs, and its TRL-named metrics."""
        idx = torch.tensor(positions)
        with autocast(self.collator.device, self.autocast):
            lp = pair_logps(self.model, batch, self.train_ref["chosen"][idx], self.train_ref["rejected"][idx])
        loss, out = combine(self.terms, lp)
        return loss, pair_metrics(out, lp, loss)

    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs:
            return {}
        return evaluate_pairs(
            self.model,
            self.eval_pairs,
            self.eval_ref,
            self.collator,
            self.terms,
            batch_size=self.config.batch_size,
            autocast_dtype=self.autocast,
            between_batches=self.between_batches,
        )

    def fsdp_units(self) -> tuple[nn.Module, list[nn.Module]]:
        return self.model, decoder_layers(decoder_and_head(self.model)[0])

    def save(self, folder: Path, state_dict: dict | None = None) -> None:
        self.model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
        self.tokenizer.save_pretrained(folder)

    def load(self, folder: Path) -> None:
        load_weights(self.model, folder)

    def export_final(self, checkpoint: Path, folder: Path) -> None:
        export_causal_lm(self.config, self.tokenizer, checkpoint, folder)

    def report(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "reference_was_cached": self.ref_cached}


RESUME_ONLY = {"trainer_state.pt"}


def export_causal_lm(config, tokenizer, checkpoint: Path, folder: Path) -> None:
    """``final/`` of a causal-LM recipe.  Full fine-tuning: the checkpoint's model files (hard links);
    LoRA (``config.lora``): the adapter merged into ``config.model``'s weights, so the next job starts from
    it like any full model."""
    if not config.lora:
        link_model_files(checkpoint, folder)
        return
    merged = merged_with_adapter(load_model(config.model), checkpoint)
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def link_model_files(checkpoint: Path, folder: Path) -> None:
    """Hard-link a checkpoint's model and tokenizer files into ``folder`` (a copy across file systems);
    checkpoints are replaced, never rewritten in place, so the links stay valid."""
    for path in checkpoint.iterdir():
        if path.is_file() and path.name not in RESUME_ONLY:
            try:
                os.link(path, folder / path.name)
            except OSError:
                shutil.copy2(path, folder / path.name)
