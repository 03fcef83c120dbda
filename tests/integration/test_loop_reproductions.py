"""The loop reproductions (``training/loop_reproduction.py``) through the studio's own loops on tiny models:
the direction that held on every seed measured (the reward-model loop), and the mechanics of the
comparisons whose direction did not (RSO against sampled pairs, CREAM against plain self-rewarding; their
numbers are in ``bench/loops.py``'s output and docs/loops.md)."""

import pytest

from tests.training_support import tiny_model_entry
from training.loop_reproduction import (
    cream_against_plain_self_rewarding,
    lab_setup,
    reward_model_loop,
    rso_against_sampled_pairs,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRAIN = {
    "method": "dpo",
    "learning_rate": 1e-3,
    "epochs": 2,
    "batch_size": 8,
    "max_length": 64,
    "warmup_ratio": 0.0,
    "lora": False,
    "save_steps": None,
    "eval_steps": None,
    "beta": 0.1,
}
LOOP = {"k": 8, "max_new_tokens": 12, "max_prompts": 48, "eval_prompts": 16, "temperature": 1.0}


@pytest.fixture
def lab(tmp_path, settings, project, manager, request):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.5
    policy = tiny_model_entry(tmp_path / "policy", hidden=64, layers=2)
    seed = getattr(request, "param", 0)
    return lab_setup(tmp_path / "lab", project=project, user=manager, policy=policy, seed=seed)


@pytest.mark.parametrize("lab", [0, 1], indirect=True)
def test_a_reward_model_loop_raises_the_held_out_score_over_three_rounds(lab):
    assert lab.reward_accuracy > 0.9  # the property is learnable: the loop has a real judge
    reading = reward_model_loop(lab, rounds=3, train=TRAIN, **LOOP)
    assert reading.state == "succeeded", reading.error
    baseline, first, _, third = reading.scores
    # measured on seeds 0–2: every loop ends above its first round, which ends above the start (a round
    # may hold or dip in between: the tiny model's greedy answers move in steps)
    assert baseline < first < third
    assert reading.win_rates[-1] > 0.5 and all(n > 0 for n in reading.pairs)


def test_rso_and_sampled_pairs_train_on_as_many_pairs_and_cream_records_its_consistency(lab):
    sigmoid = {**TRAIN, "method": "sigmoid_norm", "gamma": 0.05}
    loop = {name: value for name, value in LOOP.items() if name != "k"}
    rso, plain = rso_against_sampled_pairs(lab, k=32, accept=8, train=sigmoid, **loop)
    assert rso.state == plain.state == "succeeded", rso.error + plain.error
    assert 0 < rso.acceptance[0] < 1 and plain.acceptance == [None]
    assert rso.pairs == plain.pairs  # 4 pairs per prompt each (no prompt's samples tied)
    cream, dpo = cream_against_plain_self_rewarding(lab, rounds=3, train=TRAIN, **{**LOOP, "k": 5})
    assert cream.state == dpo.state == "succeeded", cream.error + dpo.error
    # round 1 has no previous ranking; from round 2 on, C is measured (the tuned start records its base)
    assert cream.consistency[0] is None and all(0 < c < 1 for c in cream.consistency[1:])
    assert cream.consistency[1] == dpo.consistency[1]  # both loops are the same until round 2 trains
    assert len(cream.scores) == len(dpo.scores) == 4
