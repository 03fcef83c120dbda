"""CREAM labeller arithmetic: Kendall τ-b against scipy, consistency, implicit rewards on the tiny model, and
the self-labelled rows a round makes from two rankings."""

import random

import pytest
import torch

from training.engine.lm.consistency import (
    candidate_rewards,
    consistency,
    cream_rows,
    implicit_rewards,
    kendall_tau,
    response_batch,
)
from training.engine.lm.online import Candidate
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


def test_response_batch_pads_prompts_left_and_responses_right():
    batch = response_batch([([5, 6, 7], [8, 9]), ([4], [3, 2, 1])], pad_token_id=0, device="cpu")
    assert batch.query_response.tolist() == [[5, 6, 7, 8, 9, 0], [0, 0, 4, 3, 2, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.prompt_width == 3 and batch.response_mask.tolist() == [[True, True, False], [True] * 3]


def test_candidate_rewards_are_each_responses_own_reward_whatever_it_is_batched_with(tokenizer):
    policy, reference = tiny_llama(len(tokenizer), seed=0), tiny_llama(len(tokenizer), seed=1)
    policy.train()
    prompts = [[5, 6, 7], [9, 10]]
    responses = [[[11, 12], [13, 14, 15, 16], [17]], [[18, 19, 20]]]
    done = []
    grouped = candidate_rewards(
        policy, reference, prompts, responses, pad_token_id=0, batch_size=3, between_batches=done.append
    )
    assert [len(g) for g in grouped] == [3, 1] and done == [0, 3]
    alone = [
        implicit_rewards(policy.eval(), reference, response_batch([(p, r)], pad_token_id=0, device="cpu"))
        for p, found in zip(prompts, responses, strict=True)
        for r in found
    ]
    flat = [value for group in grouped for value in group]
    assert flat == pytest.approx([float(a) for a in alone], abs=1e-4)
    assert policy.training is False  # left as the test set it last (eval) above


def _candidates(scores):
    return [Candidate(f"answer {i}", 2, True, score=s, token_ids=[i]) for i, s in enumerate(scores)]


def test_cream_rows_pick_best_and_worst_by_the_current_ranking_and_weigh_them_by_consistency():
    candidates = [_candidates([0.0, 1.0, 2.0]), _candidates([1.0, 0.0, 0.0]), _candidates([0.0, 0.0, 0.0])]
    current = [[0.5, 0.1, -0.3], [1.0, 2.0, 3.0], [0.2, 0.2, 0.2]]
    previous = [[0.4, 0.2, -1.0], [3.0, 2.0, 1.0], [0.0, 1.0, 2.0]]
    rows, summary = cream_rows(["p0", "p1", "p2"], candidates, current, previous)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("p0", "answer 0", "answer 2"),
        ("p1", "answer 2", "answer 0"),
    ]  # p2: the current model ranks its answers all alike
    assert [r["consistency"] for r in rows] == [1.0, 0.0]
    assert summary["pairs"] == 2 and summary["prompts_without_pair"] == 1
    assert summary["cream/consistency"] == 0.5 and summary["cream/consistency_min"] == 0.0
    # the reward model prefers answer 2 on p0 (disagrees) and answer 0 on p1 (disagrees as well)
    assert summary["cream/reward_model_agreement"] == 0.0


def test_cream_rows_without_a_previous_ranking_are_plain_self_rewarding():
    rows, summary = cream_rows(["p"], [_candidates([None, None])], [[0.0, 1.0]], None)
    assert rows[0]["consistency"] == 1.0 and "score_chosen" not in rows[0]
    assert summary["cream/consistency"] is None and summary["cream/reward_model_agreement"] is None
