"""CREAM labeller arithmetic: Kendall τ-b against scipy, consistency, implicit rewards on the tiny model."""

import random

import pytest
import torch

from training.engine.lm.consistency import consistency, implicit_rewards, kendall_tau
from training.engine.lm.rollout import Batch, response_logprobs
from training.engine.lm.tiny import tiny_llama

stats = pytest.importorskip("scipy.stats")


def _scipy_tau(a, b) -> float:
    tau = stats.kendalltau(a, b, variant="b").statistic
    return 0.0 if tau != tau else float(tau)  # scipy: nan when a side is all ties


@pytest.mark.parametrize("seed", range(20))
def test_kendall_tau_matches_scipy_on_random_and_tied_scores(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 9)
    continuous = ([rng.gauss(0, 1) for _ in range(n)], [rng.gauss(0, 1) for _ in range(n)])
    tied = ([rng.randint(0, 2) for _ in range(n)], [rng.randint(0, 3) for _ in range(n)])
    for a, b in (continuous, tied):
        assert kendall_tau(a, b) == pytest.approx(_scipy_tau(a, b), abs=1e-12)


def test_kendall_tau_is_zero_without_two_items_or_with_a_side_all_tied():
    assert kendall_tau([], []) == 0.0
    assert kendall_tau([1.0], [2.0]) == 0.0
    assert kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
    assert kendall_tau([3.0, 1.0, 2.0], [5.0, 5.0, 5.0]) == 0.0


def test_kendall_tau_refuses_unequal_lengths_and_non_finite_scores():
    with pytest.raises(ValueError, match="3 scores against 2"):
        kendall_tau([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        kendall_tau([1.0, float("nan")], [1.0, 2.0])


def test_consistency_maps_tau_onto_zero_to_one():
    assert consistency([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == 1.0
    assert consistency([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == 0.0
    assert consistency([1, 1, 1], [1, 2, 3]) == 0.5
    a, b = [0.3, -1.0, 2.0, 0.1, 0.5], [0.2, -0.4, 1.0, 0.9, -0.1]
    assert consistency(a, b) == pytest.approx((_scipy_tau(a, b) + 1) / 2)


@pytest.fixture
def batch():
    """Two prompts (left-padded to one width) with responses of 4 and 2 real tokens."""
    query_response = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11], [9, 10, 11, 12, 13, 14, 1, 1]])
    attention_mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]])
    response_mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    return Batch(query_response, attention_mask, 4, response_mask, torch.tensor([False, False]))


def test_implicit_rewards_of_a_model_against_itself_are_zero(tokenizer, batch):
    model = tiny_llama(len(tokenizer), seed=0)
    assert implicit_rewards(model, model, batch).tolist() == [0.0, 0.0]


def test_implicit_rewards_sum_the_log_ratio_over_each_responses_own_tokens(tokenizer, batch):
    policy, reference = tiny_llama(len(tokenizer), seed=0), tiny_llama(len(tokenizer), seed=1)
    expected = []
    for row, n in enumerate((4, 2)):  # one unpadded forward per sequence
        real = batch.attention_mask[row].bool()
        ids = batch.query_response[row][real]
        prompt = int(real[:4].sum())
        total = 0.0
        for model, sign in ((policy, 1.0), (reference, -1.0)):
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids[None]).logits[0].float(), dim=-1)
            total += sign * sum(float(logp[prompt + t - 1, ids[prompt + t]]) for t in range(n))
        expected.append(total)
    assert implicit_rewards(policy, reference, batch).tolist() == pytest.approx(expected, abs=1e-4)
    own = implicit_rewards(policy, None, batch)
    with torch.no_grad():
        direct = (response_logprobs(policy, batch)[0] * batch.response_mask).sum(dim=1)
    torch.testing.assert_close(own, direct)
    assert (own < 0).all()  # a log-likelihood, not a ratio
