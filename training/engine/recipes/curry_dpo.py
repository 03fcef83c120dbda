"""The ``curry_dpo`` recipe: Curry-DPO, pairs of ranked responses ordered by difficulty (easy first).

Rows come in either of two shapes:

* ranked rows ``{"prompt", "responses": [...], "ratings": [...]}`` (higher = better): each prompt gives the
  pairs (top, k-th) for every lower k, difficulty = rating gap;
* the pair rows a ranking dataset version exports (``prompt``, ``chosen``, ``rejected`` with ``rank_gap``
  and ``rating_gap``): per prompt, the pairs whose chosen is the prompt's top response (all of the prompt's
  pairs when no single response tops them), difficulty = the rating gap when every row has one, else the
  rank gap.

A large gap is easy.  Non-iterative: one stage over all pairs ordered easy → hard.  Iterative: the sorted
pairs are cut into ``n_stages`` sets; stage i trains on set i with a fresh optimizer, starting from stage
i−1's model, which is also its reference (its log-probs are taken when the stage begins).  Step numbers run
on across stages; ``curriculum/stage`` and ``curriculum/gap`` show where the run is.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from training.engine.lm.data import read_rows
from training.engine.recipes.dpo import DPORecipe
from training.engine.recipes.dpo_configs import PreferenceConfig
from training.engine.runtime.config import ConfigError
from training.engine.runtime.optim import step_count, step_plan
from training.engine.runtime.recipe import MicroStep, Stage


@dataclass(frozen=True, kw_only=True)
class CurryDPOConfig(PreferenceConfig):
    """Curry-DPO on ranked responses (a ranking version's pairs, or ``responses`` + ``ratings`` rows)."""

    method: ClassVar[str] = "curry_dpo"
    iterative: bool = True
    """Train stage by stage, moving the reference to the previous stage's model; False = one ordered run."""
    n_stages: int = 3
    """Number of pair sets (easy → hard) in iterative mode."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.n_stages, int) or self.n_stages < 1:
            raise ConfigError(f"n_stages: must be a positive integer, got {self.n_stages!r}")
        if self.lora and self.iterative:
            raise ConfigError("iterative: iterative Curry-DPO needs full fine-tuning (lora: false)")
        if self.reference_model is not None:
            raise ConfigError("reference_model: Curry-DPO's reference is each stage's starting weights")


def _ranked_pairs(n: int, row: dict) -> list[tuple[float, dict]]:
    responses, ratings = row["responses"], [float(r) for r in row["ratings"]]
    if len(responses) != len(ratings) or len(responses) < 2:
        raise ValueError(f"ranked row {n}: needs ≥2 responses with one rating each")
    order = sorted(range(len(ratings)), key=lambda i: -ratings[i])
    top = order[0]
    pairs = []
    for k in order[1:]:
        gap = ratings[top] - ratings[k]
        if gap > 0:
            pair = {"prompt": row["prompt"], "chosen": responses[top], "rejected": responses[k]}
            if "split" in row:
                pair["split"] = row["split"]
            pairs.append((gap, pair))
    return pairs


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _exported_pairs(rows: Sequence[dict]) -> list[tuple[float, dict]]:
    """(gap, pair) for the rows whose chosen tops their prompt (see the module docstring)."""
    by_rating = all(row.get("rating_gap") is not None for row in rows)
    by_prompt: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for n, row in enumerate(rows):
        gap = row.get("rating_gap") if by_rating else row.get("rank_gap")
        if gap is None:
            raise ValueError(
                f"pair row {n}: no rank_gap or rating_gap; Curry-DPO trains on a ranking version's pairs"
            )
        by_prompt[_key(row["prompt"])].append((n, row))
    out = []
    for group in by_prompt.values():
        beaten = {_key(row["rejected"]) for _, row in group}
        tops = {_key(row["chosen"]) for _, row in group} - beaten
        keep = [(n, row) for n, row in group if len(tops) != 1 or _key(row["chosen"]) in tops]
        for n, row in keep:
            gap = row["rating_gap"] if by_rating else row["rank_gap"]
            out.append((n, float(gap), {k: v for k, v in row.items() if k not in ("rank_gap", "rating_gap")}))
    return [(gap, pair) for _, gap, pair in sorted(out, key=lambda item: item[0])]


def curriculum_pairs(rows: Sequence[dict]) -> list[tuple[float, dict]]:
    """(difficulty gap, preference row) for every pair of the rows, sorted by gap, largest (easiest)
    first; ties keep the rows' order."""
    ranked = [pair for n, row in enumerate(rows) if "responses" in row for pair in _ranked_pairs(n, row)]
    exported = _exported_pairs([row for row in rows if "responses" not in row])
    return sorted(ranked + exported, key=lambda item: -item[0])


def stages(pairs: list[tuple[float, Any]], n_stages: int) -> list[list[Any]]:
    """Cut easy → hard pairs into ``n_stages`` contiguous sets of near-equal size (empty sets dropped)."""
    size = -(-len(pairs) // n_stages)
    return [[p for _, p in pairs[i : i + size]] for i in range(0, len(pairs), size)]


class CurryDPORecipe(DPORecipe):
    """DPO over a curriculum: one stage per pair set (iterative) or one ordered stage."""

    accepts: ClassVar[tuple[str, ...]] = ("ranking",)
    supports_distributed: ClassVar[bool] = True  # the ranks share each stage's reference pass
    # A later stage's reference is the trained model's: under FSDP its weights are sharded, and the cache key
    # (a hash of the whole weights) would need them gathered first.
    supports_fsdp: ClassVar[bool] = False

    @classmethod
    def planned_steps(cls, config: CurryDPOConfig, n_train_rows: int) -> int:
        if n_train_rows == 0:
            return 0
        sizes = [
            len(s) for s in stages([(0, None)] * n_train_rows, config.n_stages if config.iterative else 1)
        ]
        return sum(step_count(n, config) for n in sizes)

    def load_pairs(self):
        config = self.config
        rows = read_rows(config.train_file)
        ordered = curriculum_pairs([r for r in rows if (r.get("split") or "train") == "train"])
        if config.eval_file:
            held_out = read_rows(config.eval_file)
        else:
            held_out = [p for _, p in curriculum_pairs([r for r in rows if r.get("split") == "test"])]
        sets = stages(ordered, config.n_stages if config.iterative else 1)
        stage_of = [i for i, rows_ in enumerate(sets) for _ in rows_]
        self.gaps = [gap for gap, _ in ordered]
        train_pairs, eval_pairs, dropped = self.tokenize([p for _, p in ordered], held_out)
        self.stage_positions = [[] for _ in sets]
        for position, pair in enumerate(train_pairs):
            self.stage_positions[stage_of[pair.index]].append(position)
        self.stage_positions = [s for s in self.stage_positions if s]
        self.stage = 0
        return train_pairs, eval_pairs, dropped

    def setup_reference(self) -> None:
        """Stage 0's references from the starting weights; later stages take theirs when they begin."""
        n = len(self.train_pairs)
        self.train_ref = {"chosen": torch.zeros(n), "rejected": torch.zeros(n)}
        self.ref_cached = self.stage_reference(0)

    def stage_reference(self, index: int) -> bool:
        """Log-probs of stage ``index``'s pairs and of the held-out pairs under the current weights."""
        positions = self.stage_positions[index]
        values, cached = self.reference([self.train_pairs[i] for i in positions])
        for side in ("chosen", "rejected"):
            self.train_ref[side][torch.tensor(positions)] = values[side]
        self.eval_ref = self.reference(self.eval_pairs)[0] if self.eval_pairs else {}
        return cached

    def stages(self) -> list[Stage]:
        out = []
        for positions in self.stage_positions:
            plan = step_plan(len(positions), self.config, shuffle=False)
            mapped = [[[positions[i] for i in mb] for mb in step] for step in plan]
            out.append(Stage(mapped, len(positions)))
        return out

    def begin_stage(self, index: int, *, resumed: bool) -> None:
        self.stage = index
        if index > 0 and not resumed:
            self.stage_reference(index)

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        out = super().micro_step(positions, scale=scale)
        gap = sum(self.gaps[self.train_pairs[i].index] for i in positions) / len(positions)
        metrics = {**out.metrics, "curriculum/stage": float(self.stage), "curriculum/gap": gap}
        return MicroStep(metrics, out.examples, out.tokens)

    def state_dict(self) -> dict[str, Any]:
        """The current stage's reference log-probs: a resumed stage keeps the reference it began with."""
        return {"stage": self.stage, "train_ref": self.train_ref, "eval_ref": self.eval_ref}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.stage, self.train_ref, self.eval_ref = state["stage"], state["train_ref"], state["eval_ref"]
