"""Greedy held-out generations scored by a reward model, with KL to a base (``lm/policy_eval.py``): the
comparison of a base and two policies equals a plain computation (HF ``generate`` per prompt, unpadded
forwards of the policy, the base and the reward model), and the win rate and summaries are checked by hand."""

import pytest
import torch

from training.engine.lm.data import prompt_token_ids
from training.engine.lm.models import load_tokenizer
from training.engine.lm.policy_eval import compare_policies, policy_summary, same_vocabulary, win_rate
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.tiny import tiny_llama

PROMPTS = ["hi", "tree moon", "hi", "a longer prompt here, much too long for the limit", "sun"]
MAX_NEW = 7


def test_win_rate_counts_a_tie_as_a_half_and_the_summary_averages_each_field():
    assert win_rate([1.0, 0.5, -1.0, 2.0], [0.0, 0.5, 0.0, 1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_rate([], []) is None
    with pytest.raises(ValueError, match="win_rate"):
        win_rate([1.0], [])
    rows = [
        {"score": 1.0, "kl": 0.5, "length": 4, "ended": True},
        {"score": -1.0, "kl": 1.5, "length": 2, "ended": False},
    ]
    base = [{"score": 0.0, "kl": 0.0, "length": 3, "ended": True}] * 2
    assert policy_summary(rows, base) == {
        "n": 2,
        "mean_score": 0.0,
        "win_rate": 0.5,
        "mean_kl": 1.0,
        "mean_length": 3.0,
        "eos_rate": 0.5,
    }
    assert policy_summary(base)["win_rate"] is None


def plain_greedy(policy, base, scorer, tokenizer, prompt_ids) -> dict:
    """One prompt, no padding, no cache of ours: HF greedy ``generate``, then full forwards."""
    eos = tokenizer.eos_token_id
    out = policy.generate(
        input_ids=torch.tensor([prompt_ids]),
        max_new_tokens=MAX_NEW,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )[0, len(prompt_ids) :].tolist()
    response = out[: out.index(eos) + 1] if eos in out else out
    ids = torch.tensor([prompt_ids + response])
    target = torch.tensor(response)[:, None]

    def logp(model):
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
        return torch.log_softmax(logits.float(), -1).gather(-1, target).squeeze(-1).sum()

    return {
        "response": tokenizer.decode(response, skip_special_tokens=True).strip(),
        "score": float(scorer(input_ids=ids).logits[0, 0]),
        "kl": float(logp(policy) - logp(base)),
        "length": len(response),
        "ended": eos in response,
    }


@torch.no_grad()
def test_comparing_policies_equals_a_plain_greedy_computation_per_prompt():
    tokenizer = load_tokenizer("tiny")
    base, dpo, ppo = (tiny_llama(len(tokenizer), seed=s).eval() for s in (0, 1, 2))
    torch.manual_seed(0)
    scorer = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    result = compare_policies(
        PROMPTS,
        tokenizer=tokenizer,
        base=base,
        policies={"dpo": dpo, "ppo": ppo},
        reward_model=scorer,
        max_new_tokens=MAX_NEW,
        max_prompt_length=30,
        batch_size=2,
        examples=2,
    )
    kept = ["hi", "tree moon", "sun"]  # the repeat once, the long prompt dropped
    assert (result["prompts"], result["dropped"]) == (3, 1)
    assert [e["prompt"] for e in result["examples"]] == kept[:2]
    models = {"base": base, "dpo": dpo, "ppo": ppo}
    plain = {
        name: [plain_greedy(m, base, scorer, tokenizer, prompt_token_ids(tokenizer, p)) for p in kept]
        for name, m in models.items()
    }
    for name in models:
        for i, example in enumerate(result["examples"]):
            got, want = example[name], plain[name][i]
            assert got["response"] == want["response"] and got["length"] == want["length"], name
            assert got["ended"] == want["ended"]
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            assert got["kl"] == pytest.approx(want["kl"], abs=1e-4)
        summary = result["models"][name]
        assert summary["n"] == 3
        assert summary["mean_score"] == pytest.approx(sum(r["score"] for r in plain[name]) / 3, abs=1e-5)
        assert summary["mean_kl"] == pytest.approx(sum(r["kl"] for r in plain[name]) / 3, abs=1e-4)
        assert summary["mean_length"] == pytest.approx(sum(r["length"] for r in plain[name]) / 3)
        if name == "base":
            assert summary["win_rate"] is None and summary["mean_kl"] == 0.0
        else:
            scores, base_scores = [r["score"] for r in plain[name]], [r["score"] for r in plain["base"]]
            assert summary["win_rate"] == pytest.approx(win_rate(scores, base_scores))
    assert any(abs(r["kl"]) > 1e-3 for r in plain["dpo"])  # the policies really differ from the base


def test_a_tokenizer_of_another_vocabulary_is_named():
    tokenizer = load_tokenizer("tiny")
    other = load_tokenizer("tiny")
    other.add_tokens(["<new>"])
    same_vocabulary(tokenizer, {"dpo": load_tokenizer("tiny")})
    with pytest.raises(ValueError, match="^reward_model: another tokenizer"):
        same_vocabulary(tokenizer, {"dpo": load_tokenizer("tiny"), "reward_model": other})
