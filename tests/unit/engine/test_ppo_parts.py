"""PPO's parts checked against plain computations: GAE and whitening by hand, the clipped losses' gradients,
the adaptive KL controller, and rollouts (KV-cache sampling, padded log-probs, values and scores) against
unpadded full forwards of the same sequences."""

import pytest
import torch

from training.engine.lm.data import prompt_token_ids
from training.engine.lm.logps import implicit_token_rewards
from training.engine.lm.models import load_tokenizer
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.rollout import (
    SamplingConfig,
    response_logprobs,
    response_values,
    sample,
    sequence_scores,
)
from training.engine.lm.tiny import tiny_llama
from training.engine.objectives.ppo import KLController, gae, kl_penalised_rewards, ppo_losses, whiten


def test_gae_matches_the_recursion_written_out_and_stops_at_each_response_end():
    rewards = torch.tensor([[0.1, -0.2, 1.0, 9.0], [0.5, 2.0, 9.0, 9.0]])
    values = torch.tensor([[0.3, 0.4, 0.2, 9.0], [1.0, -1.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    for row, n in ((0, 3), (1, 2)):
        r, v = rewards[row, :n].tolist(), values[row, :n].tolist() + [0.0]
        expected, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            running = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * running
            expected[t] = running
        torch.testing.assert_close(advantages[row, :n], torch.tensor(expected))
        torch.testing.assert_close(returns[row, :n], torch.tensor(expected) + values[row, :n])
        assert advantages[row, n:].abs().sum() == 0 and returns[row, n:].abs().sum() == 0


def test_whitening_and_the_kl_penalised_rewards():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    w = whiten(x, mask)
    assert float(w[mask].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(w[mask].std()) == pytest.approx(1.0, abs=1e-4)
    assert w[~mask].abs().sum() == 0
    logp, ref = torch.tensor([[-1.0, -2.0, -1.0], [-0.5, 0.0, 0.0]]), torch.tensor([[-1.5, -1.0, -1.0]] * 2)
    rewards, non_score = kl_penalised_rewards(logp, ref, torch.tensor([2.0, -1.0]), mask, 0.1)
    torch.testing.assert_close(non_score, torch.tensor([[-0.05, 0.1, 0.0], [-0.1, 0.0, 0.0]]))
    # the score lands on each response's last real token
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-1.1, 0.0, 0.0]]))


def test_the_clipped_policy_loss_stops_pushing_past_the_clip_and_reports_trl_statistics():
    mask = torch.ones(1, 3, dtype=torch.bool)
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.5, 0.0, -0.5]], requires_grad=True)  # ratios e^0.5 > 1.2, 1, e^-0.5 < 0.8
    advantages = torch.tensor([[1.0, 1.0, -1.0]])
    values = torch.zeros(1, 3, requires_grad=True)
    out = ppo_losses(
        new_logprobs=new,
        old_logprobs=old,
        advantages=advantages,
        new_values=values,
        old_values=torch.zeros(1, 3),
        returns=torch.ones(1, 3),
        mask=mask,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
    )
    out.loss.backward()
    # tokens 0 and 2 are past the clip in the direction their advantage pushes: no gradient
    assert new.grad[0, 0] == 0 and new.grad[0, 2] == 0 and new.grad[0, 1] != 0
    assert out.stats["policy/clipfrac_avg"] == pytest.approx(2 / 3)
    assert out.stats["policy/approxkl_avg"] == pytest.approx(0.5 * (0.25 + 0 + 0.25) / 3)
    # the value moves 0 → 1 but its clipped update stops at 0.2: the clipped error counts
    assert out.stats["loss/value_avg"] == pytest.approx(0.5 * 1.0)
    assert out.stats["val/clipfrac_avg"] == pytest.approx(0.0)
    assert set(out.stats) >= {"loss/policy_avg", "val/ratio"}


def test_the_adaptive_kl_controller_moves_towards_its_target_and_a_fixed_one_does_not():
    fixed = KLController(0.1)
    fixed.update(50.0, 64)
    assert fixed.value == 0.1
    adaptive = KLController(0.1, target=6.0, horizon=1000)
    adaptive.update(12.0, 100)  # error clipped to +0.2
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 100 / 1000))
    adaptive.update(3.0, 100)  # error −0.5 clipped to −0.2
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.98)


def test_implicit_token_rewards_clip_the_log_ratio_before_the_weight():
    reward = implicit_token_rewards(
        torch.tensor([-1.0, -9.0]), torch.tensor([-3.0, -1.0]), beta=0.5, clip=5.0
    )
    torch.testing.assert_close(reward, torch.tensor([1.0, -2.5]))


@pytest.fixture(scope="module")
def models():
    tokenizer = load_tokenizer("tiny")
    policy = tiny_llama(len(tokenizer), seed=1).eval()
    torch.manual_seed(0)
    scorer = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    prompts = [prompt_token_ids(tokenizer, p) for p in ("hi", "a longer prompt here", "tree moon")]
    return tokenizer, policy, scorer, prompts


def test_sampling_is_seeded_and_greedy_sampling_equals_generate(models):
    tokenizer, policy, _, prompts = models
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = SamplingConfig(10, temperature=1.3, top_p=0.9)
    a = sample(policy, prompts, config, generator=torch.Generator().manual_seed(3), **ids)
    b = sample(policy, prompts, config, generator=torch.Generator().manual_seed(3), **ids)
    c = sample(policy, prompts, config, generator=torch.Generator().manual_seed(4), **ids)
    assert torch.equal(a.query_response, b.query_response) and not torch.equal(a.responses, c.responses)
    greedy = sample(policy, prompts, SamplingConfig(10, greedy=True), generator=None, **ids)
    for row, prompt in enumerate(prompts):
        out = policy.generate(
            input_ids=torch.tensor([prompt]),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(prompt) :]
        n = int(greedy.response_mask[row].sum())
        assert greedy.responses[row, :n].tolist() == out[:n].tolist()


def test_stop_at_eos_masks_what_follows_the_first_eos(models):
    tokenizer, _, _, prompts = models
    eos = tokenizer.eos_token_id
    uniform = tiny_llama(len(tokenizer), seed=1).eval()
    with torch.no_grad():
        uniform.model.norm.weight.zero_()
    # every logit is 0: sampling is uniform, so some rows hit EOS in 40 tokens under a fixed seed
    batch = sample(
        uniform,
        prompts * 4,
        SamplingConfig(40),
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    for row in range(batch.responses.shape[0]):
        tokens = batch.responses[row].tolist()
        n = int(batch.response_mask[row].sum())
        if eos in tokens[:n]:
            assert tokens.index(eos) == n - 1 and bool(batch.ended[row])
        else:
            assert n == 40 and not bool(batch.ended[row])
    assert batch.ended.any()


def test_padded_log_probs_values_and_scores_equal_unpadded_forwards(models):
    tokenizer, policy, scorer, prompts = models
    batch = sample(
        policy,
        prompts,
        SamplingConfig(8, temperature=0.7),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        logprobs, entropy = response_logprobs(policy, batch, temperature=0.7, with_entropy=True)
        values = response_values(scorer, batch)
        scores = sequence_scores(scorer, batch)
        for row, prompt in enumerate(prompts):
            n = int(batch.response_mask[row].sum())
            response = batch.responses[row, :n].tolist()
            ids = torch.tensor([prompt + response])
            logits = policy(input_ids=ids).logits[0, len(prompt) - 1 : -1] / 0.7
            plain = torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
            torch.testing.assert_close(logprobs[row, :n], plain, atol=1e-5, rtol=1e-4)
            # the sampling pass's own log-probs (the KV cache's logits) are the same numbers
            torch.testing.assert_close(batch.sampled_logprobs[row, :n], plain, atol=1e-5, rtol=1e-4)
            assert batch.sampled_logprobs[row, n:].abs().sum() == 0
            p = torch.softmax(logits, -1)
            torch.testing.assert_close(entropy[row, :n], -(p * p.log()).sum(-1), atol=1e-5, rtol=1e-4)
            for t in range(n):  # the value before token t: the classifier read at the prefix's end
                prefix = torch.tensor([prompt + response[:t]])
                torch.testing.assert_close(
                    values[row, t], scorer(input_ids=prefix).logits[0, 0], atol=1e-5, rtol=1e-4
                )
            torch.testing.assert_close(scores[row], scorer(input_ids=ids).logits[0, 0], atol=1e-5, rtol=1e-4)
