"""Each objective against numbers computed by hand (math module, no torch)."""

import math

import pytest
import torch

from training.engine.objectives.preference import (
    OBJECTIVES,
    LossTerm,
    PairLogps,
    cdpo_loss,
    combine,
    cream_loss,
    dpo_loss,
    flex_loss,
    hinge_loss,
    ipo_loss,
    pair_metrics,
    rdpo_loss,
    sft_loss,
    sigmoid_norm_loss,
)


def _nls(x: float) -> float:
    """−log σ(x)."""
    return math.log1p(math.exp(-x))


# pair 0: ρw = -10 - (-12) = 2, ρl = -20 - (-19) = -1, h = 3
# pair 1: ρw = -5 - (-4) = -1,  ρl = -6 - (-7) = 1,   h = -2
LP = PairLogps(
    policy_chosen=torch.tensor([-10.0, -5.0]),
    policy_rejected=torch.tensor([-20.0, -6.0]),
    ref_chosen=torch.tensor([-12.0, -4.0]),
    ref_rejected=torch.tensor([-19.0, -7.0]),
    chosen_len=torch.tensor([4.0, 2.0]),
    rejected_len=torch.tensor([5.0, 1.0]),
)
H = [3.0, -2.0]


def _close(t: torch.Tensor, expected: list[float]) -> None:
    assert t.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_dpo_loss_matches_hand_values():
    out = dpo_loss(LP, beta=0.1)
    _close(out.losses, [_nls(0.3), _nls(-0.2)])
    _close(out.chosen_rewards, [0.2, -0.1])
    _close(out.rejected_rewards, [-0.1, 0.1])


def test_cdpo_loss_mixes_both_directions():
    out = cdpo_loss(LP, beta=0.5, epsilon=0.1)
    expected = [0.9 * _nls(0.5 * h) + 0.1 * _nls(-0.5 * h) for h in H]
    _close(out.losses, expected)


def test_rdpo_loss_is_unbiased_correction():
    out = rdpo_loss(LP, beta=0.5, epsilon=0.3)
    expected = [(0.7 * _nls(0.5 * h) - 0.3 * _nls(-0.5 * h)) / 0.4 for h in H]
    _close(out.losses, expected)
    # rdpo with ε = 0 is dpo
    _close(rdpo_loss(LP, beta=0.5, epsilon=0.0).losses, dpo_loss(LP, beta=0.5).losses.tolist())


def test_cream_loss_weighs_each_direction_by_the_pairs_consistency():
    out = cream_loss(LP._replace(consistency=torch.tensor([0.7, 0.2])), beta=0.5)
    _close(out.losses, [0.7 * _nls(1.5) + 0.3 * _nls(-1.5), 0.2 * _nls(-1.0) + 0.8 * _nls(1.0)])
    _close(out.chosen_rewards, [1.0, -0.5])
    _close(out.rejected_rewards, [-0.5, 0.5])


def test_cream_with_consistency_one_is_dpo_and_with_zero_is_dpo_on_swapped_pairs():
    dpo = dpo_loss(LP, beta=0.5).losses.tolist()
    _close(cream_loss(LP._replace(consistency=torch.ones(2)), beta=0.5).losses, dpo)
    _close(cream_loss(LP, beta=0.5).losses, dpo)  # no consistency in the batch: every C is 1
    swapped = PairLogps(
        LP.policy_rejected, LP.policy_chosen, LP.ref_rejected, LP.ref_chosen, LP.rejected_len, LP.chosen_len
    )
    expected = dpo_loss(swapped, beta=0.5).losses.tolist()
    _close(cream_loss(LP._replace(consistency=torch.zeros(2)), beta=0.5).losses, expected)


def test_combine_hands_the_consistency_to_the_cream_term():
    lp = LP._replace(consistency=torch.tensor([1.0, 0.0]))
    total, _ = combine([LossTerm("cream", 1.0, {"beta": 0.1})], lp)
    assert float(total) == pytest.approx((_nls(0.3) + _nls(0.2)) / 2, rel=1e-6)


def test_ipo_loss_uses_length_averaged_ratios():
    out = ipo_loss(LP, tau=0.1)
    # pair 0: 2/4 - (-1)/5 = 0.7 ; pair 1: -1/2 - 1/1 = -1.5 ; target 1/(2τ) = 5
    _close(out.losses, [(0.7 - 5) ** 2, (-1.5 - 5) ** 2])


def test_hinge_loss_clips_at_zero():
    out = hinge_loss(LP, gamma=0.5)
    _close(out.losses, [0.0, 2.0])  # max(0, 1 - 1.5), max(0, 1 + 1)


def test_sigmoid_norm_loss():
    out = sigmoid_norm_loss(LP, gamma=0.05)
    _close(out.losses, [_nls(0.15), _nls(-0.1)])


def test_sft_loss_is_length_normalised_nll_of_chosen():
    _close(sft_loss(LP).losses, [10 / 4, 5 / 2])


def test_flex_loss_weights_chosen_and_rejected_ratios_separately():
    out = flex_loss(LP, beta_pos=0.1, beta_neg=0.08)
    _close(out.losses, [_nls(0.1 * 2 - 0.08 * -1), _nls(0.1 * -1 - 0.08 * 1)])


def test_combine_adds_weighted_means():
    total, first = combine([LossTerm("dpo", 1.0, {"beta": 0.1}), LossTerm("sft", 0.1)], LP)
    expected = (_nls(0.3) + _nls(-0.2)) / 2 + 0.1 * (2.5 + 2.5) / 2
    assert float(total) == pytest.approx(expected, rel=1e-6)
    _close(first.chosen_rewards, [0.2, -0.1])


def test_pair_metrics_use_trl_names_and_strict_accuracy():
    out = dpo_loss(LP, beta=0.1)
    m = pair_metrics(out, LP, out.losses.mean())
    assert m["rewards/accuracies"] == 0.5
    assert m["rewards/margins"] == pytest.approx((0.3 - 0.2) / 2)
    assert m["logps/chosen"] == pytest.approx(-7.5)
    assert m["logps/rejected"] == pytest.approx(-13.0)


def test_every_objective_is_differentiable_in_policy_logps():
    for name, fn in OBJECTIVES.items():
        pc = LP.policy_chosen.clone().requires_grad_(True)
        pr = LP.policy_rejected.clone().requires_grad_(True)
        lp = LP._replace(policy_chosen=pc, policy_rejected=pr)
        fn(lp).losses.sum().backward()
        assert pc.grad is not None and torch.isfinite(pc.grad).all(), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "unknown objective"),
        ({"name": "dpo", "params": {"epsilon": 0.1}}, "unknown parameter"),
        ({"name": "rdpo", "params": {"epsilon": 0.5}}, "epsilon must lie"),
        ({"name": "dpo", "params": {"beta": -1.0}}, "beta must lie"),
        ({"name": "dpo", "weight": float("nan")}, "finite"),
    ],
)
def test_loss_term_rejects_bad_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossTerm(**kwargs)
