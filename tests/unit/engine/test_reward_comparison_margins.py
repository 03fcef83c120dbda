"""Per-pair margins of the DPORM vs EXRM comparison: the implicit reward's margins and accuracy equal
β·(ρ_w − ρ_l) computed by hand from plain full-logit log-probs, the reward model's equal
``pair_rewards``, and a stop requested between batches ends the pass."""

import pytest
import torch

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import tokenize_rows
from training.engine.lm.logps import unpacked_logps
from training.engine.lm.reward_comparison import (
    ScoredSide,
    accuracy_drops,
    compare_on_splits,
    implicit_reward_margins,
    margin_accuracy,
    reward_model_margins,
)
from training.engine.lm.rewards import load_reward_model, pair_rewards
from training.engine.lm.tiny import tiny_llama
from training.engine.runtime.recipe import Interrupted

BETA = 0.5


@pytest.fixture
def pairs(tokenizer, make_rows):
    return tokenize_rows(make_rows(7, seed=5), tokenizer, max_length=None)[0]


@pytest.fixture
def collator(tokenizer):
    return PackingCollator(tokenizer.pad_token_id, None)


def test_implicit_reward_margins_equal_the_hand_computed_log_ratios(tokenizer, pairs, collator):
    policy, reference = tiny_llama(len(tokenizer), seed=1), tiny_llama(len(tokenizer), seed=0)
    margins = implicit_reward_margins(policy, reference, pairs, collator, beta=BETA, batch_size=3)
    by_hand = []
    for (pc, pr), (rc, rr) in zip(
        unpacked_logps(policy, pairs), unpacked_logps(reference, pairs), strict=True
    ):
        by_hand.append(BETA * ((pc.sum() - rc.sum()) - (pr.sum() - rr.sum())))
    torch.testing.assert_close(margins, torch.stack(by_hand), atol=1e-4, rtol=1e-4)
    wins = sum(float(m > 0) for m in by_hand)
    assert margin_accuracy(margins) == pytest.approx(wins / len(pairs))
    assert 0 < wins < len(pairs)  # the check is not vacuous: two random models disagree on some pairs


def test_a_policy_that_is_its_own_reference_has_zero_margins_and_zero_accuracy(tokenizer, pairs, collator):
    model = tiny_llama(len(tokenizer), seed=0)
    margins = implicit_reward_margins(model, model, pairs, collator, beta=BETA)
    assert torch.count_nonzero(margins) == 0 and margin_accuracy(margins) == 0.0  # a tie is not a win


def test_reward_model_margins_equal_pair_rewards(tokenizer, pairs, collator):
    torch.manual_seed(0)
    model = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    margins = reward_model_margins(model, pairs, collator, batch_size=2)
    with torch.no_grad():
        chosen, rejected = pair_rewards(model, collator(pairs))
    torch.testing.assert_close(margins, chosen - rejected, atol=1e-5, rtol=1e-5)
    assert margin_accuracy(margins) == pytest.approx(float((chosen > rejected).float().mean()))


def test_a_stop_between_batches_ends_the_pass(tokenizer, pairs, collator):
    calls = []

    def between_batches():
        calls.append(1)
        if len(calls) > 1:
            raise Interrupted

    model = tiny_llama(len(tokenizer), seed=0)
    with pytest.raises(Interrupted):
        implicit_reward_margins(
            model, model, pairs, collator, beta=BETA, batch_size=2, between_batches=between_batches
        )
    assert len(calls) == 2


def test_compare_on_splits_reports_n_accuracy_and_drop_per_side(tokenizer, make_rows):
    torch.manual_seed(0)
    rows = make_rows(10, seed=2)
    policy = ScoredSide(tiny_llama(len(tokenizer), seed=1), tokenizer)
    rm = ScoredSide(load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id), tokenizer)
    report = compare_on_splits(
        {"in_distribution": rows[:6], "shifted": rows[6:]},
        policy=policy,
        reference=tiny_llama(len(tokenizer), seed=0),
        beta=BETA,
        reward_model=rm,
        batch_size=4,
    )
    assert (report["in_distribution"]["n"], report["shifted"]["n"]) == (6, 4)
    for name, part in (("in_distribution", rows[:6]), ("shifted", rows[6:])):
        pairs = tokenize_rows(part, tokenizer, max_length=None)[0]
        rm_margins = reward_model_margins(rm.model, pairs, PackingCollator(tokenizer.pad_token_id))
        assert report[name]["reward_model"]["accuracy"] == pytest.approx(margin_accuracy(rm_margins))
        assert report[name]["dpo"]["pairs"] == len(pairs)
    dpo = report["in_distribution"]["dpo"]["accuracy"] - report["shifted"]["dpo"]["accuracy"]
    assert report["drop"]["dpo"] == pytest.approx(dpo)
    assert accuracy_drops({"in_distribution": {}, "shifted": {}}) == {"dpo": None, "reward_model": None}
