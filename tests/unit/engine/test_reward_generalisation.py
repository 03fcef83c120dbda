"""The DPORM vs EXRM reproduction on tiny models (``engine/reward_generalisation.py``): both models learn
the in-distribution preference, and under the shift the explicit reward model loses no more accuracy than
the DPO implicit reward.

What was seen on seeds 0–4 (tiny model, 48 train pairs, 1 epoch, 32 in-distribution and 64 shifted
held-out pairs): both accuracies are 1.0 in-distribution; shifted, DPO 1.0/1.0/0.953/1.0/0.938 and the
reward model 1.0/1.0/0.984/1.0/0.984 — the reward model drops strictly less on seeds 2 and 4 and as
little (nothing) on the others.  So the test asserts "no more than", not "less than", per seed."""

import pytest

from training.engine.reward_generalisation import GeneralisationSetup, run_generalisation

SEEDS = (0, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_reward_model_drops_no_more_than_the_dpo_implicit_reward_under_shift(tmp_path, seed):
    report = run_generalisation(GeneralisationSetup(seed=seed), tmp_path)
    ind, shifted = report["in_distribution"], report["shifted"]
    assert (ind["n"], shifted["n"]) == (32, 64)
    assert ind["dpo"]["accuracy"] >= 0.9 and ind["reward_model"]["accuracy"] >= 0.9
    assert report["drop"]["reward_model"] <= report["drop"]["dpo"]
    assert report["rule"] == "metadata 'family' in b"
