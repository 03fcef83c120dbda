"""Scoring single responses with a reward model: the same numbers as the packed pair rewards of training
and as the class's own unpadded forward, whatever the batch size."""

import torch

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import tokenize_rows
from training.engine.lm.models import load_tokenizer
from training.engine.lm.rewards import load_reward_model, pair_rewards
from training.engine.lm.scoring import response_ids, score_responses


def test_scores_equal_the_packed_pair_rewards_of_the_same_pairs(make_rows):
    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny")
    model = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    rows = make_rows(6, seed=3)
    pairs, _ = tokenize_rows(rows, tokenizer, max_length=None)
    with torch.no_grad():
        chosen, rejected = pair_rewards(
            model, PackingCollator(tokenizer.pad_token_id, token_budget=120)(pairs)
        )
    inputs = [(r["prompt"], r[side]) for r in rows for side in ("chosen", "rejected")]
    expected = torch.stack([chosen, rejected], dim=1).flatten()
    for batch_size in (1, 3, 16):  # uneven lengths in one batch: right padding must not move the scores
        scores = score_responses(model, tokenizer, inputs, batch_size=batch_size)
        torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-5, rtol=1e-4)
    ids = torch.tensor([response_ids(tokenizer, *inputs[0])])
    with torch.no_grad():
        plain = model(input_ids=ids).logits[0, 0]
    torch.testing.assert_close(torch.tensor(scores[0]), plain, atol=1e-5, rtol=1e-4)


def test_max_length_keeps_the_start_as_training_does():
    tokenizer = load_tokenizer("tiny")
    full = response_ids(tokenizer, "cat dog", "a long answer about the sun")
    cut = response_ids(tokenizer, "cat dog", "a long answer about the sun", max_length=len(full) - 5)
    assert cut == full[: len(full) - 5]
