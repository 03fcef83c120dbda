"""The data side of an online round (``training/engine/lm/online.py``): RSO's rejection sampler, the pair
rules, the preference rows and their summary, and K seeded, scored samples per prompt from a tiny Llama."""

import math
import random

import pytest
import torch

from training.engine.lm.online import (
    Candidate,
    PairRule,
    best_worst_pair,
    gap_pairs,
    labelled_pairs,
    preference_rows,
    rejection_sample,
    sample_candidates,
)
from training.engine.lm.policy_eval import prompt_token_ids
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.rollout import SamplingConfig, sample, sequence_scores
from training.engine.lm.scoring import response_ids, score_ids
from training.engine.lm.tiny import tiny_llama

TRIALS = 5000
TOLERANCE = 0.025  # ≥ 3.5 standard errors of a frequency over 5000 trials (σ ≤ 0.0071)


def softmax(scores, beta):
    weights = [math.exp(s / beta) for s in scores]
    return [w / sum(weights) for w in weights]


def first_accepted_frequencies(scores, beta, *, trials=TRIALS, seed=0):
    rng, counts = random.Random(seed), [0] * len(scores)
    for _ in range(trials):
        counts[rejection_sample(scores, accept=1, beta=beta, rng=rng).accepted[0]] += 1
    return [c / trials for c in counts]


class ScriptedRng:
    """``randrange`` returns the scripted positions (into the list of candidates not yet accepted) and
    ``random`` the scripted uniforms, so every draw of the sampler is known."""

    def __init__(self, positions, uniforms):
        self.positions, self.uniforms = list(positions), list(uniforms)

    def randrange(self, n):
        position = self.positions.pop(0)
        assert 0 <= position < n
        return position

    def random(self):
        return self.uniforms.pop(0)


# --- rejection_sample --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "beta"),
    [([0.0, 1.0], 1.0), ([1.0, 0.0], 1.0), ([0.0, 0.5, 1.0, 2.0], 1.0), ([0.3, -0.2, 0.1, 0.3, 0.0], 0.5)],
)
def test_rejection_sample_first_accepted_follows_softmax_of_scores_over_beta(scores, beta):
    frequencies = first_accepted_frequencies(scores, beta)
    for got, want in zip(frequencies, softmax(scores, beta), strict=True):
        assert got == pytest.approx(want, abs=TOLERANCE)


def test_rejection_sample_does_not_favour_a_candidate_for_its_position():
    forward = first_accepted_frequencies([0.0, 1.0, 2.0], 1.0)
    backward = first_accepted_frequencies([2.0, 1.0, 0.0], 1.0)
    for got, want in zip(backward, reversed(forward), strict=True):
        assert got == pytest.approx(want, abs=2 * TOLERANCE)


def test_rejection_sample_second_accepted_follows_softmax_over_the_rest():
    scores, beta, rng = [0.0, 1.0, 2.0], 1.0, random.Random(1)
    seconds = {i: [0] * len(scores) for i in range(len(scores))}
    for _ in range(3 * TRIALS):
        first, second = rejection_sample(scores, accept=2, beta=beta, rng=rng).accepted
        assert first != second
        seconds[first][second] += 1
    for first, counts in seconds.items():
        rest = [i for i in range(len(scores)) if i != first]
        want = softmax([scores[i] for i in rest], beta)
        total = sum(counts)
        assert total > 500
        for i, p in zip(rest, want, strict=True):
            assert counts[i] / total == pytest.approx(p, abs=0.05)


def test_rejection_sample_with_a_large_beta_accepts_uniformly_at_a_rate_near_one():
    scores, beta = [0.0, 1.0, 2.0, 3.0], 1e4
    for got in first_accepted_frequencies(scores, beta):
        assert got == pytest.approx(0.25, abs=TOLERANCE)
    rng = random.Random(2)
    accepted = draws = 0
    for _ in range(500):
        stats = rejection_sample(list(range(16)), accept=8, beta=beta, rng=rng)
        accepted, draws = accepted + len(stats.accepted), draws + stats.draws
        assert len(stats.accepted) == 8 and len(set(stats.accepted)) == 8
    assert accepted / draws > 0.99


def test_rejection_sample_with_a_small_beta_accepts_the_best_first():
    scores = [0.2, 1.5, -0.4, 1.0, 0.9]
    assert first_accepted_frequencies(scores, 0.05, trials=1000)[1] >= 0.99
    # and the rest in score order after it: each later acceptance is again the best of those left
    stats = rejection_sample(scores, accept=5, beta=0.01, rng=random.Random(3))
    assert stats.accepted == [1, 3, 4, 0, 2]
    assert stats.acceptance_rate < 1


@pytest.mark.parametrize("accept", [5, 6, 100])
def test_rejection_sample_accepts_every_candidate_when_asked_for_as_many_or_more(accept):
    stats = rejection_sample([0.5, -3.0, 2.0, 0.0, 1.0], accept=accept, beta=0.5, rng=random.Random(4))
    assert sorted(stats.accepted) == [0, 1, 2, 3, 4]
    assert stats.draws >= 5 and stats.passes >= 1


def test_rejection_sample_counts_every_uniform_draw_and_pass():
    # pass 1: r_max 0 over three, draws index 1 (rejected), 2 (rejected), 0 (accepted);
    # pass 2: r_max -100 over the two left, its first draw (index 1) is accepted and the sampler stops
    rng = ScriptedRng(positions=[1, 2, 0, 0], uniforms=[0.5, 0.5, 0.5, 0.5])
    stats = rejection_sample([0.0, -100.0, -100.0], accept=2, beta=1.0, rng=rng)
    assert stats.accepted == [0, 1]
    assert (stats.draws, stats.passes) == (4, 2)
    assert stats.acceptance_rate == 0.5
    assert rng.positions == [] and rng.uniforms == []


def test_rejection_sample_accepts_on_every_draw_when_scores_tie():
    stats = rejection_sample([0.7] * 6, accept=4, beta=0.1, rng=random.Random(5))
    assert len(stats.accepted) == 4 and len(set(stats.accepted)) == 4
    assert (stats.draws, stats.passes, stats.acceptance_rate) == (4, 1, 1.0)


def test_rejection_sample_of_no_candidates_accepts_nothing():
    stats = rejection_sample([], accept=8, beta=0.5, rng=random.Random(0))
    assert (stats.accepted, stats.draws, stats.passes, stats.acceptance_rate) == ([], 0, 0, 0.0)


@pytest.mark.parametrize("beta", [0.0, -0.5])
def test_rejection_sample_rejects_a_beta_that_is_not_positive(beta):
    with pytest.raises(ValueError, match="beta"):
        rejection_sample([0.0, 1.0], accept=1, beta=beta, rng=random.Random(0))


def test_rejection_sample_is_determined_by_its_rng():
    scores = [0.1 * i for i in range(10)]
    runs = [rejection_sample(scores, accept=4, beta=0.3, rng=random.Random(seed)) for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0].accepted != runs[2].accepted


# --- pair rules ----------------------------------------------------------------------------------------


def test_labelled_pairs_pairs_neighbours_in_order_and_labels_them_by_score():
    scores = [0.1, 0.5, 0.5, 0.2, 0.9]
    assert labelled_pairs(scores, [0, 1, 2, 3, 4]) == [(1, 0), (2, 3)]  # the odd one out is left
    assert labelled_pairs(scores, [3, 0, 4, 1]) == [(3, 0), (4, 1)]
    assert labelled_pairs(scores, [1, 2, 4, 0]) == [(4, 0)]  # the tie 1-2 is dropped
    assert labelled_pairs(scores, [4]) == [] and labelled_pairs(scores, []) == []


def test_best_worst_pair_takes_the_first_best_and_the_first_worst():
    assert best_worst_pair([1.0, 3.0, 3.0, 0.0, 0.0]) == [(1, 3)]
    assert best_worst_pair([0.0, 2.0]) == [(1, 0)]
    assert best_worst_pair([-1.0, -1.0, -2.0]) == [(0, 2)]


@pytest.mark.parametrize("scores", [[0.4, 0.4, 0.4], [0.4], []])
def test_best_worst_pair_gives_no_pair_without_two_different_scores(scores):
    assert best_worst_pair(scores) == []


def test_gap_pairs_lists_every_ordered_pair_at_least_gap_apart():
    scores = [0.0, 0.5, 1.0, 1.0]
    assert gap_pairs(scores, 0.5) == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert gap_pairs(scores, 0.75) == [(2, 0), (3, 0)]
    assert gap_pairs(scores, 2.0) == []
    assert gap_pairs([0.3, 0.3], 0.01) == []


@pytest.mark.parametrize("gap", [0.0, -1.0])
def test_gap_pairs_rejects_a_gap_that_is_not_positive(gap):
    with pytest.raises(ValueError, match="gap"):
        gap_pairs([0.0, 1.0], gap)


@pytest.mark.parametrize("kwargs", [{"rule": "random"}, {"gap": 0.0}, {"rso_beta": 0.0}, {"rso_accept": 1}])
def test_pair_rule_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        PairRule(**kwargs)


# --- preference_rows -----------------------------------------------------------------------------------


def scored(*scores, prefix="r"):
    return [Candidate(f"{prefix}{i}", length=3, ended=True, score=s) for i, s in enumerate(scores)]


def test_preference_rows_best_worst_rows_summary_and_a_prompt_without_pair():
    candidates = [
        scored(0.2, 0.9, -0.1, prefix="a"),
        scored(0.5, 0.5, prefix="b"),
        scored(1.0, 3.0, prefix="c"),
    ]
    rows, summary = preference_rows(["p1", "p2", "p3"], candidates, PairRule("best_worst"), seed=0)
    assert rows == [
        {"prompt": "p1", "chosen": "a1", "rejected": "a2", "score_chosen": 0.9, "score_rejected": -0.1},
        {"prompt": "p3", "chosen": "c1", "rejected": "c0", "score_chosen": 3.0, "score_rejected": 1.0},
    ]
    assert summary == {
        "pairs": 2,
        "prompts": 3,
        "prompts_without_pair": 1,
        "mean_score_spread": pytest.approx((1.0 + 0.0 + 2.0) / 3),
    }


def test_preference_rows_sampled_pairs_pair_neighbours_in_sampling_order_and_drop_ties():
    candidates = [scored(0.1, 0.7, 0.4, 0.4, 0.9, prefix="a")]
    rows, summary = preference_rows(["p"], candidates, PairRule("sampled_pairs"), seed=0)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a1", "a0")]  # a2-a3 tie; a4 has no partner
    assert summary["pairs"] == 1 and "rso/acceptance_rate" not in summary


def test_preference_rows_gap_rows_follow_prompt_then_pair_order():
    messages = [{"role": "user", "content": "hi"}]
    candidates = [scored(0.0, 1.0, 2.0, prefix="a"), scored(5.0, 4.0, prefix="b")]
    rows, summary = preference_rows(["p1", messages], candidates, PairRule("gap", gap=1.0), seed=0)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("p1", "a1", "a0"),
        ("p1", "a2", "a0"),
        ("p1", "a2", "a1"),
        (messages, "b0", "b1"),
    ]
    assert summary["pairs"] == 4 and summary["prompts_without_pair"] == 0
    assert summary["mean_score_spread"] == pytest.approx(1.5)
    assert "rso/acceptance_rate" not in summary


def test_preference_rows_refuses_a_candidate_without_a_score():
    candidates = [scored(0.0, 1.0), [Candidate("x", 1, True, 0.5), Candidate("y", 1, True, None)]]
    with pytest.raises(ValueError, match="score"):
        preference_rows(["p1", "p2"], candidates, PairRule(), seed=0)


def test_preference_rows_refuses_prompts_and_candidates_of_different_lengths():
    with pytest.raises(ValueError):
        preference_rows(["p1", "p2"], [scored(0.0, 1.0)], PairRule(), seed=0)


def test_preference_rows_of_no_prompts_is_empty():
    rows, summary = preference_rows([], [], PairRule("rso"), seed=0)
    assert rows == []
    assert summary == {
        "pairs": 0,
        "prompts": 0,
        "prompts_without_pair": 0,
        "mean_score_spread": None,
        "rso/acceptance_rate": None,
        "rso/accepted_per_prompt": None,
    }


def test_preference_rows_rso_pairs_accepted_responses_and_reports_acceptance():
    # β huge: every draw is accepted, so each prompt takes `accept` distinct candidates in as many draws
    rng = random.Random(0)
    prompts = [f"p{i}" for i in range(5)]
    candidates = [scored(*[rng.gauss(0, 1) for _ in range(12)], prefix=f"{p}-") for p in prompts]
    rule = PairRule("rso", rso_accept=4, rso_beta=1e9)
    rows, summary = preference_rows(prompts, candidates, rule, seed=3)
    assert summary["rso/acceptance_rate"] == 1.0
    assert summary["rso/accepted_per_prompt"] == 4
    assert summary["pairs"] == 10 and summary["prompts_without_pair"] == 0
    assert [r["prompt"] for r in rows] == [p for p in prompts for _ in range(2)]
    for row in rows:
        assert row["score_chosen"] > row["score_rejected"]
        assert row["chosen"].startswith(row["prompt"] + "-") and row["rejected"].startswith(
            row["prompt"] + "-"
        )
    for prompt in prompts:  # the two pairs of a prompt use four different responses
        used = [r[side] for r in rows if r["prompt"] == prompt for side in ("chosen", "rejected")]
        assert len(set(used)) == 4


def test_preference_rows_rso_acceptance_falls_with_beta_and_counts_short_prompts():
    rng = random.Random(1)
    candidates = [scored(*[rng.gauss(0, 1) for _ in range(16)]) for _ in range(6)] + [scored(0.0, 1.0, 2.0)]
    prompts = [f"p{i}" for i in range(7)]
    rates = []
    for beta in (10.0, 0.5, 0.05):
        _, summary = preference_rows(
            prompts, candidates, PairRule("rso", rso_accept=8, rso_beta=beta), seed=0
        )
        assert summary["rso/accepted_per_prompt"] == pytest.approx((6 * 8 + 3) / 7)
        rates.append(summary["rso/acceptance_rate"])
    assert 1 >= rates[0] > rates[1] > rates[2] > 0


def test_preference_rows_rso_is_determined_by_its_seed():
    rng = random.Random(2)
    prompts = [f"p{i}" for i in range(4)]
    candidates = [scored(*[rng.gauss(0, 1) for _ in range(16)]) for _ in prompts]
    rule = PairRule("rso", rso_accept=6, rso_beta=0.5)
    first = preference_rows(prompts, candidates, rule, seed=11)
    assert preference_rows(prompts, candidates, rule, seed=11) == first
    assert preference_rows(prompts, candidates, rule, seed=12)[0] != first[0]


# --- sample_candidates ---------------------------------------------------------------------------------

PROMPTS = ["cat dog", "sun", "blue moon fish", "tree"]
SAMPLING = SamplingConfig(max_new_tokens=10)


@pytest.fixture(scope="module")
def models(tokenizer):
    torch.set_num_threads(1)
    policy = tiny_llama(len(tokenizer), seed=0)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)  # the reward head is drawn from the global RNG
    try:
        reward = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    finally:
        torch.random.set_rng_state(state)
    return policy, reward


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    return [prompt_token_ids(tokenizer, p) for p in PROMPTS]


def candidates_of(models, prompt_ids, tokenizer, **kwargs):
    policy, reward = models
    options = {"k": 4, "sampling": SAMPLING, "seed": 1, "reward_model": reward} | kwargs
    return sample_candidates(policy, prompt_ids, tokenizer=tokenizer, **options)


def as_dicts(found):
    return [[c.to_dict() for c in one] for one in found]


def test_sample_candidates_gives_k_scored_responses_per_prompt(models, prompt_ids, tokenizer):
    found = candidates_of(models, prompt_ids, tokenizer, k=3)
    assert [len(one) for one in found] == [3] * len(PROMPTS)
    for candidate in (c for one in found for c in one):
        assert 1 <= candidate.length <= SAMPLING.max_new_tokens
        assert candidate.ended or candidate.length == SAMPLING.max_new_tokens
        assert isinstance(candidate.score, float) and math.isfinite(candidate.score)
    assert len({c.response for one in found for c in one}) > 1


def test_sample_candidates_without_a_reward_model_leaves_scores_unset(models, prompt_ids, tokenizer):
    found = candidates_of(models, prompt_ids, tokenizer, reward_model=None)
    assert all(c.score is None for one in found for c in one)
    assert [[c.response for c in one] for one in found] == [
        [c.response for c in one] for one in candidates_of(models, prompt_ids, tokenizer)
    ]


def test_sample_candidates_same_seed_same_output_other_seed_other_output(models, prompt_ids, tokenizer):
    first = as_dicts(candidates_of(models, prompt_ids, tokenizer, seed=5))
    assert as_dicts(candidates_of(models, prompt_ids, tokenizer, seed=5)) == first
    assert as_dicts(candidates_of(models, prompt_ids, tokenizer, seed=6)) != first


def test_sample_candidates_are_one_rollout_of_the_prompts_repeated_k_times(models, prompt_ids, tokenizer):
    policy, reward = models
    k, seed = 3, 9
    found = candidates_of(models, prompt_ids, tokenizer, k=k, seed=seed, batch_size=len(PROMPTS) * k)
    batch = sample(
        policy,
        [ids for ids in prompt_ids for _ in range(k)],
        SAMPLING,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    scores = sequence_scores(reward, batch).tolist()
    lengths = batch.response_mask.sum(dim=1).tolist()
    for row, candidate in enumerate(c for one in found for c in one):
        tokens = batch.responses[row, : lengths[row]].tolist()
        assert candidate.length == lengths[row] and candidate.ended == bool(batch.ended[row])
        assert candidate.response == tokenizer.decode(tokens, skip_special_tokens=True).strip()
        assert candidate.score == pytest.approx(scores[row], abs=1e-6)


def test_sample_candidates_scores_are_the_reward_at_the_last_response_token(models, prompt_ids, tokenizer):
    # Scored apart, unpadded, by scoring.score_ids: prompt ids + the response's tokens (its EOS included).
    # The decoded text stands for the tokens only where it re-encodes to them (no special or edge-space
    # tokens dropped by decode(skip_special_tokens=True).strip()).
    _, reward = models
    found = candidates_of(models, prompt_ids, tokenizer, k=8, seed=2)
    checked = ended = 0
    for prompt, ids, one in zip(PROMPTS, prompt_ids, found, strict=True):
        for candidate in one:
            tokens = tokenizer.encode(candidate.response, add_special_tokens=False)
            tokens += [tokenizer.eos_token_id] if candidate.ended else []
            if len(tokens) != candidate.length:
                continue
            alone = score_ids(reward, [ids + tokens], pad_token_id=tokenizer.pad_token_id, batch_size=1)[0]
            assert candidate.score == pytest.approx(alone, abs=1e-5)
            checked += 1
            if candidate.ended:
                # = the reward-model recipe's tokens of (prompt, response) without the chat template's
                # trailing newline after the EOS (score_responses reads one token later, at that newline)
                side = response_ids(tokenizer, prompt, candidate.response)
                assert side[-2:] == [tokenizer.eos_token_id, tokenizer.encode("\n")[0]]
                cut = score_ids(reward, [side[:-1]], pad_token_id=tokenizer.pad_token_id, batch_size=1)[0]
                assert candidate.score == pytest.approx(cut, abs=1e-5)
                ended += 1
    assert checked >= 10 and ended >= 1


def test_sample_candidates_runs_one_generator_through_consecutive_batches(models, prompt_ids, tokenizer):
    # Not independent of batch_size: the rows (prompt-major, k each) are cut into batches that share one
    # generator, so a batch's draws depend on what the batches before it consumed.
    policy, reward = models
    k, seed, size = 2, 4, 3
    found = candidates_of(models, prompt_ids, tokenizer, k=k, seed=seed, batch_size=size)
    rows = [ids for ids in prompt_ids for _ in range(k)]
    generator, expected = torch.Generator().manual_seed(seed), []
    for start in range(0, len(rows), size):
        batch = sample(
            policy,
            rows[start : start + size],
            SAMPLING,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
        )
        lengths = batch.response_mask.sum(dim=1).tolist()
        scores = sequence_scores(reward, batch).tolist()
        expected += [
            (tokenizer.decode(batch.responses[r, : lengths[r]].tolist(), skip_special_tokens=True).strip(), s)
            for r, s in enumerate(scores)
        ]
    got = [(c.response, c.score) for one in found for c in one]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-6)


@pytest.mark.parametrize(("batch_size", "done"), [(2, [0, 1, 2, 3]), (3, [0, 1, 3]), (100, [0])])
def test_sample_candidates_reports_prompts_done_before_each_batch(
    models, prompt_ids, tokenizer, batch_size, done
):
    calls = []
    candidates_of(models, prompt_ids, tokenizer, k=2, batch_size=batch_size, between_batches=calls.append)
    assert calls == done


def test_sample_candidates_stops_when_between_batches_raises(models, prompt_ids, tokenizer):
    policy, _ = models

    class Stop(Exception):
        pass

    calls = []

    def stop_at_second(done):
        calls.append(done)
        if len(calls) == 2:
            raise Stop

    policy.train()
    try:
        with pytest.raises(Stop):
            candidates_of(models, prompt_ids, tokenizer, k=2, batch_size=2, between_batches=stop_at_second)
        assert calls == [0, 1]
        assert policy.training  # the policy's mode is restored on the way out
    finally:
        policy.eval()


def test_sample_candidates_restores_the_policy_mode(models, prompt_ids, tokenizer):
    policy, _ = models
    for training in (True, False):
        policy.train(training)
        candidates_of(models, prompt_ids[:1], tokenizer, k=1)
        assert policy.training is training
    policy.eval()


def test_sample_candidates_refuses_k_below_one(models, prompt_ids, tokenizer):
    with pytest.raises(ValueError, match="k"):
        candidates_of(models, prompt_ids, tokenizer, k=0)
