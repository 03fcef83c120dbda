"""Curry-DPO: pairs from ranked responses, ordered by rating gap (easy first), iterative or in one run.

Ranked row format: ``{"prompt": ..., "responses": [str | messages, ...], "ratings": [float, ...]}`` (higher =
better; a ``split`` column is honoured).  Each prompt gives the pairs (top, k-th) for every lower k;
difficulty = rating gap, large gap = easy.  Non-iterative: one run over all pairs ordered easy → hard.
Iterative: the pairs sorted easy → hard are cut into ``n_stages`` sets; stage i trains on set i starting
from stage i−1's model, which is also its reference (the reference log-probs are taken from the stage's
starting weights).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from training.engine.config import ConfigError, TrainConfig, register_method
from training.engine.data import read_rows
from training.engine.objectives import LossTerm


@register_method
@dataclass(frozen=True, kw_only=True)
class CurryDPOConfig(TrainConfig):
    """Curry-DPO on ranked rows (``responses`` + ``ratings``)."""

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

    def main_term(self) -> LossTerm:
        return LossTerm("dpo", 1.0, {"beta": self.beta})


def curriculum_pairs(rows: Sequence[dict]) -> list[tuple[float, dict]]:
    """(rating gap, preference row) for (top, k-th) of every ranked row, sorted by gap, largest first."""
    out = []
    for n, row in enumerate(rows):
        responses, ratings = row["responses"], [float(r) for r in row["ratings"]]
        if len(responses) != len(ratings) or len(responses) < 2:
            raise ValueError(f"ranked row {n}: needs ≥2 responses with one rating each")
        order = sorted(range(len(ratings)), key=lambda i: -ratings[i])
        top = order[0]
        for k in order[1:]:
            gap = ratings[top] - ratings[k]
            if gap > 0:
                pair = {"prompt": row["prompt"], "chosen": responses[top], "rejected": responses[k]}
                if "split" in row:
                    pair["split"] = row["split"]
                out.append((gap, pair))
    return sorted(out, key=lambda item: -item[0])  # stable: ties keep row order


def stages(pairs: list[tuple[float, dict]], n_stages: int) -> list[list[dict]]:
    """Cut easy → hard pairs into ``n_stages`` contiguous sets of near-equal size (empty sets dropped)."""
    size = -(-len(pairs) // n_stages)
    return [[p for _, p in pairs[i : i + size]] for i in range(0, len(pairs), size)]


def _write(path: Path, rows: Sequence[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def train_curriculum(config: CurryDPOConfig, *, train_fn: Callable, **kwargs):
    """Run Curry-DPO with ``train_fn`` (the loop's ``train``); returns the last stage's TrainResult."""
    from training.engine.methods import DPOConfig

    out = Path(config.output_dir)
    all_rows = read_rows(config.train_file)
    ranked = curriculum_pairs([r for r in all_rows if (r.get("split") or "train") == "train"])
    held_out = [p for _, p in curriculum_pairs([r for r in all_rows if r.get("split") == "test"])]
    eval_file = config.eval_file or (
        _write(out / "curriculum" / "eval.jsonl", held_out) if held_out else None
    )
    sets = stages(ranked, config.n_stages) if config.iterative else [[p for _, p in ranked]]
    base = {f.name: getattr(config, f.name) for f in dataclasses.fields(DPOConfig) if hasattr(config, f.name)}
    model, result = config.model, None
    for i, rows in enumerate(sets):
        stage_dir = out / f"stage-{i}" if config.iterative else out
        stage = DPOConfig(
            **{
                **base,
                "model": model,
                "train_file": _write(out / "curriculum" / f"stage-{i}.jsonl", rows),
                "eval_file": eval_file,
                "output_dir": str(stage_dir),
                "shuffle": False,
                "save_final": True,
            }
        )
        result = train_fn(stage, **kwargs)
        if result.status != "succeeded":
            return result
        model = f"local:{result.last_checkpoint}"
    return result
