"""Shared fixtures: the char tokenizer, tiny Llama models and a synthetic preference task."""

import random

import pytest

from training.engine.lm.tiny import tiny_llama, tiny_tokenizer

WORDS = ["cat", "dog", "sun", "tree", "blue", "moon", "fish", "rock"]


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return tiny_llama(len(tokenizer), seed=0)


@pytest.fixture(scope="session")
def make_rows():
    return synthetic_rows


def synthetic_rows(n: int, seed: int = 0, flip: float = 0.0) -> list[dict]:
    """Chosen answers are in lower case, rejected in upper case: a property a tiny model learns fast.
    With ``flip`` > 0, that share of rows (chosen at random, seeded) has chosen and rejected swapped."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(2))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        other = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        row = {"prompt": prompt, "chosen": answer, "rejected": other.upper()}
        if rng.random() < flip:
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
        rows.append(row)
    return rows
