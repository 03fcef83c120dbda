"""The DPORM vs EXRM experiment (Lin et al.): does the DPO implicit reward lose more accuracy under a
distribution shift than an explicit reward model trained on the same pairs?

A synthetic preference whose preferred property is the same everywhere — the chosen answer is in lower
case, the rejected one in upper case — over two prompt families:

* family ``a`` (in-distribution): prompts of 2 words, answers of 1–3 words, all from ``WORDS_A``;
* family ``b`` (shifted): prompts of 5–7 words, answers of 2–4 words, all from ``WORDS_B`` (other
  words, half of whose letters family ``a`` never shows, and longer prompts: a topic and a length shift
  at once).

Training uses family ``a`` only (``split: train``); the held-out rows (``split: test``) hold unseen family
``a`` pairs and the family ``b`` pairs, cut apart by the metadata rule ``family = b`` (``shift.py``).  A
DPO run and a reward-model run on the same train rows go through the engine's own recipes
(``methods.train``), and both are scored by ``reward_comparison.compare_on_splits``: the numbers the
studio's report shows.  ``tests/unit/engine/test_reward_generalisation.py`` runs it on tiny models and
``bench/dporm_vs_exrm.py`` on the bundled SmolLM2-135M.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from training.engine.lm.models import load_model, load_tokenizer
from training.engine.lm.reward_comparison import ScoredSide, compare_on_splits
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.shift import ShiftRule, split_by_shift
from training.engine.methods import train
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.recipes.reward_model import RewardModelConfig

WORDS_A = ["cat", "dog", "sun", "tree", "blue", "moon", "fish", "rock"]
WORDS_B = ["jump", "vex", "quiz", "wavy", "pyre", "zest", "oxen", "joy"]
SHIFT_RULE = ShiftRule(kind="metadata", key="family", values=("b",))
"""Held-out rows of family ``b`` are the shifted split."""


@dataclass(frozen=True)
class GeneralisationSetup:
    """One seeded run of the experiment: data sizes and both recipes' settings."""

    model: str = "tiny"
    """Base causal LM of both runs (``tiny[:opts]`` in tests, ``bundled`` in the bench)."""
    seed: int = 0
    """Seeds the rows and both runs."""
    train_pairs: int = 48
    """Family ``a`` training pairs."""
    heldout_pairs: int = 32
    """Unseen family ``a`` pairs (the in-distribution split)."""
    shifted_pairs: int = 64
    """Family ``b`` pairs (the shifted split)."""
    epochs: int = 1
    """Passes of each run over the training pairs."""
    batch_size: int = 8
    """Pairs per optimizer step."""
    dpo_learning_rate: float = 1e-3
    """DPO's AdamW learning rate."""
    rm_learning_rate: float = 1e-3
    """The reward model's AdamW learning rate."""
    beta: float = 0.1
    """DPO's β (the implicit reward's temperature)."""
    max_length: int = 96
    """Both runs' ``max_length``."""
    shifted_words: tuple[str, ...] = tuple(WORDS_B)
    """The words of family ``b``'s prompts and answers."""


def _pair(rng: random.Random, words: list[str], prompt_words: tuple[int, int], answer_words: tuple[int, int]):
    def say(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    return {
        "prompt": say(*prompt_words),
        "chosen": say(*answer_words),
        "rejected": say(*answer_words).upper(),
    }


def shifted_preference_rows(
    *, train: int, heldout: int, shifted: int, seed: int, shifted_words: tuple[str, ...] = tuple(WORDS_B)
) -> list[dict]:
    """Family ``a`` train rows, then held-out family ``a`` rows, then held-out family ``b`` rows, each with
    ``split`` and ``metadata.family`` (the shift rule's field)."""
    rng = random.Random(seed)
    rows = []
    for split, family, n in (("train", "a", train), ("test", "a", heldout), ("test", "b", shifted)):
        for _ in range(n):
            row = (
                _pair(rng, WORDS_A, (2, 2), (1, 3))
                if family == "a"
                else _pair(rng, list(shifted_words), (5, 7), (2, 4))
            )
            rows.append({**row, "split": split, "metadata": {"family": family}})
    return rows


def _common(setup: GeneralisationSetup, data: Path, out: Path) -> dict:
    return {
        "model": setup.model,
        "train_file": str(data),
        "output_dir": str(out),
        "batch_size": setup.batch_size,
        "epochs": setup.epochs,
        "max_length": setup.max_length,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "seed": setup.seed,
        "device": "cpu",
    }


def train_both(setup: GeneralisationSetup, rows: list[dict], work: Path) -> tuple[Path, Path]:
    """Train the DPO model and the reward model on the rows' train split; returns both final folders."""
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dpo = DPOConfig(
        **_common(setup, data, work / "dpo"),
        learning_rate=setup.dpo_learning_rate,
        beta=setup.beta,
        ref_cache_dir=str(work / "ref_cache"),
    )
    rm = RewardModelConfig(**_common(setup, data, work / "rm"), learning_rate=setup.rm_learning_rate)
    dpo_run, rm_run = train(dpo), train(rm)
    return dpo_run.final_model, rm_run.final_model


def run_generalisation(setup: GeneralisationSetup, work: Path) -> dict:
    """Train both models, then both accuracies on the in-distribution and shifted held-out splits
    (``compare_on_splits``'s report, plus the setup)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rows = shifted_preference_rows(
        train=setup.train_pairs,
        heldout=setup.heldout_pairs,
        shifted=setup.shifted_pairs,
        seed=setup.seed,
        shifted_words=setup.shifted_words,
    )
    dpo_folder, rm_folder = train_both(setup, rows, work)
    split = split_by_shift([r for r in rows if r["split"] == "test"], SHIFT_RULE)
    tokenizer = load_tokenizer(setup.model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    report = compare_on_splits(
        {"in_distribution": split.in_distribution, "shifted": split.shifted},
        policy=ScoredSide(load_model(f"local:{dpo_folder}"), tokenizer, setup.max_length),
        reference=load_model(setup.model),
        beta=setup.beta,
        reward_model=ScoredSide(
            load_reward_model(f"local:{rm_folder}", pad_token_id=pad), tokenizer, setup.max_length
        ),
        batch_size=setup.batch_size,
    )
    return {**report, "seed": setup.seed, "model": setup.model, "rule": SHIFT_RULE.describe()}
