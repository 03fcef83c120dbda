"""Diffusion-DPO objective against numbers derived by hand from the formulas (math module, no torch)."""

import math

import pytest
import torch

from training.engine.objectives.diffusion import (
    PairErrors,
    diffusion_dpo,
    diffusion_dpo_loss,
    implicit_accuracy,
    pair_errors,
    per_sample_mse,
    prediction_target,
)


def _nls(x: float) -> float:
    """−log σ(x)."""
    return math.log1p(math.exp(-x))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Dyadic values, exact in float32.  β = 4, so β/2 = 2.
# pair 0: Δw = 0.25 − 0.375 = −0.125, Δl = 0.5 − 0.25 = 0.25,   inner = −0.375, z = −2·inner = 0.75
# pair 1: Δw = 0.75 − 0.625 = 0.125,  Δl = 0.5 − 0.625 = −0.125, inner = 0.25,  z = −0.5
ERR = PairErrors(
    mse_w=torch.tensor([0.25, 0.75]),
    mse_l=torch.tensor([0.5, 0.5]),
    ref_mse_w=torch.tensor([0.375, 0.625]),
    ref_mse_l=torch.tensor([0.25, 0.625]),
)
INNER = [-0.375, 0.25]
Z = [0.75, -0.5]


def _close(t: torch.Tensor, expected: list[float]) -> None:
    assert t.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_sigmoid_loss_matches_hand_values_and_rewards():
    out = diffusion_dpo_loss(ERR, beta=4.0)
    _close(out.losses, [_nls(0.75), _nls(-0.5)])
    _close(out.inner, INNER)
    _close(out.chosen_rewards, [0.25, -0.25])  # −2·Δw
    _close(out.rejected_rewards, [-0.5, 0.25])  # −2·Δl
    _close(out.chosen_rewards - out.rejected_rewards, Z)


def test_beta_is_twice_the_diffusers_example_beta_dpo():
    # diffusers: logits = ref_diff − model_diff, loss −log σ(beta_dpo·logits), no ½.
    # ref_diff = [0.375 − 0.25, 0.625 − 0.625] = [0.125, 0]; model_diff = [−0.25, 0.25]
    logits = [0.125 - (-0.25), 0.0 - 0.25]
    beta_dpo = 2.0
    out = diffusion_dpo_loss(ERR, beta=2 * beta_dpo)
    _close(out.losses, [_nls(beta_dpo * g) for g in logits])


def test_ipo_loss_is_squared_distance_to_one_over_beta():
    out = diffusion_dpo_loss(ERR, beta=4.0, loss_type="ipo")
    # (−inner − 1/β)²: (0.375 − 0.25)², (−0.25 − 0.25)²; diffusers: (logits − 1/(2·2))², same numbers
    _close(out.losses, [0.015625, 0.25])


def test_sft_loss_type_is_winner_denoising_loss():
    out = diffusion_dpo_loss(ERR, beta=4.0, loss_type="sft")
    _close(out.losses, [0.25, 0.75])
    _close(out.chosen_rewards, [0.25, -0.25])  # still reported


def test_sft_weight_adds_weighted_winner_error_to_sigmoid_and_ipo():
    out = diffusion_dpo_loss(ERR, beta=4.0, sft_weight=0.5)
    _close(out.losses, [_nls(0.75) + 0.125, _nls(-0.5) + 0.375])
    out = diffusion_dpo_loss(ERR, beta=4.0, loss_type="ipo", sft_weight=0.5)
    _close(out.losses, [0.015625 + 0.125, 0.25 + 0.375])


def test_lowering_the_model_winner_error_lowers_the_loss():
    mse_w = ERR.mse_w.clone().requires_grad_(True)
    mse_l = ERR.mse_l.clone().requires_grad_(True)
    errors = PairErrors(mse_w, mse_l, ERR.ref_mse_w, ERR.ref_mse_l)
    diffusion_dpo_loss(errors, beta=4.0).losses.sum().backward()
    # d/d e_w of softplus(−z), z = −2·inner: 2·σ(−z); d/d e_l is its negative
    _close(mse_w.grad, [2 * _sigmoid(-0.75), 2 * _sigmoid(0.5)])
    _close(mse_l.grad, [-2 * _sigmoid(-0.75), -2 * _sigmoid(0.5)])
    lower = PairErrors(ERR.mse_w - 0.0625, ERR.mse_l, ERR.ref_mse_w, ERR.ref_mse_l)
    assert (diffusion_dpo_loss(lower, beta=4.0).losses < diffusion_dpo_loss(ERR, beta=4.0).losses).all()


def test_gradient_through_predictions_moves_winner_toward_target():
    target = torch.zeros(4, 1, 2, 2)
    model_pred = torch.full((4, 1, 2, 2), 0.5, requires_grad=True)
    ref_pred = torch.full((4, 1, 2, 2), 0.5)
    loss, _ = diffusion_dpo(pair_errors(model_pred=model_pred, ref_pred=ref_pred, target=target), beta=4.0)
    loss.backward()
    # gradient descent shrinks the winners' predictions toward 0 and grows the losers'
    assert (model_pred.grad[:2] > 0).all()
    assert (model_pred.grad[2:] < 0).all()


def test_equal_model_and_reference_gives_log_two_and_half_accuracy():
    target = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    pred = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    errors = pair_errors(model_pred=pred, ref_pred=pred.clone(), target=target)
    loss, metrics = diffusion_dpo(errors)
    assert torch.equal(diffusion_dpo_loss(errors).losses, torch.full((3,), math.log(2)))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-7)
    assert metrics["implicit_acc"] == 0.5
    assert metrics["inner"] == 0.0
    assert metrics["rewards/margins"] == 0.0


def test_implicit_accuracy_counts_ties_as_half():
    assert implicit_accuracy(torch.tensor([-1.0, 0.0, 1.0, 0.0])).item() == 0.5  # (1 + ½·2)/4
    assert implicit_accuracy(torch.tensor([-1.0, -1.0, 0.0, 1.0])).item() == 0.625  # (2 + ½)/4
    assert implicit_accuracy(torch.tensor([-3.0, -1e-9])).item() == 1.0


def test_metrics_match_hand_values():
    loss, m = diffusion_dpo(ERR, beta=4.0)
    assert loss.item() == pytest.approx((_nls(0.75) + _nls(-0.5)) / 2, rel=1e-6)
    expected = {
        "loss": (_nls(0.75) + _nls(-0.5)) / 2,
        "implicit_acc": 0.5,  # pair 0 favours the winner, pair 1 not
        "mse/winner": 0.5,
        "mse/loser": 0.5,
        "mse/ref_winner": 0.5,
        "mse/ref_loser": 0.4375,
        "diff/model": 0.0,  # mean of [−0.25, 0.25]
        "diff/ref": 0.0625,  # mean of [0.125, 0]
        "inner": -0.0625,
        "rewards/chosen": 0.0,
        "rewards/rejected": -0.125,
        "rewards/margins": 0.125,
    }
    assert m == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_large_beta_stays_finite_for_every_branch():
    mse_w = ERR.mse_w.clone().requires_grad_(True)
    errors = PairErrors(mse_w, ERR.mse_l, ERR.ref_mse_w, ERR.ref_mse_l)
    out = diffusion_dpo_loss(errors, beta=1e12)
    # z = ±1e12·inner/2: pair 0 → loss ≈ 0, pair 1 → loss ≈ −z = 1.25e11
    assert out.losses.tolist() == pytest.approx([0.0, 1.25e11], rel=1e-6)
    out.losses.sum().backward()
    assert torch.isfinite(mse_w.grad).all()
    for loss_type in ("ipo", "sft"):
        assert torch.isfinite(diffusion_dpo_loss(ERR, beta=1e12, loss_type=loss_type).losses).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": 0.0},
        {"beta": math.inf},
        {"loss_type": "hinge"},
        {"sft_weight": -0.1},
        {"loss_type": "sft", "sft_weight": 0.5},
    ],
)
def test_loss_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        diffusion_dpo_loss(ERR, **kwargs)


def test_per_sample_mse_averages_all_non_batch_dims_in_float32():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [0.5, 0.5]]]).unsqueeze(1)
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]).unsqueeze(1)
    # (1 + 4 + 9 + 16)/4 = 7.5 ; 0.5² = 0.25
    _close(per_sample_mse(pred, target), [7.5, 0.25])
    assert per_sample_mse(pred.bfloat16(), target.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError):
        per_sample_mse(pred, target[:, :, :1])


def test_pair_errors_splits_winners_then_losers_and_detaches_reference():
    target = torch.zeros(4, 2)
    model_pred = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 3.0]], requires_grad=True)
    ref_pred = torch.tensor([[0.0, 2.0], [1.0, 1.0], [2.0, 2.0], [0.0, 0.0]], requires_grad=True)
    e = pair_errors(model_pred=model_pred, ref_pred=ref_pred, target=target)
    _close(e.mse_w, [1.0, 2.0])  # (1+1)/2, (4+0)/2
    _close(e.mse_l, [4.5, 5.0])  # (0+9)/2, (1+9)/2
    _close(e.ref_mse_w, [2.0, 1.0])
    _close(e.ref_mse_l, [4.0, 0.0])
    assert e.mse_w.requires_grad and not e.ref_mse_w.requires_grad
    with pytest.raises(ValueError):
        pair_errors(model_pred=model_pred[:3], ref_pred=ref_pred[:3], target=target[:3])


LATENTS = torch.ones(2, 1, 2, 2)
NOISE = torch.full((2, 1, 2, 2), 2.0)
TIMESTEPS = torch.tensor([0, 1])


def _velocity(latents, noise, timesteps):
    """A scheduler's get_velocity with ᾱ = [0.64, 0.36]: √ᾱ_t·ε − √(1−ᾱ_t)·x₀."""
    alphas_cumprod = torch.tensor([0.64, 0.36])[timesteps].view(-1, 1, 1, 1)
    return alphas_cumprod.sqrt() * noise - (1 - alphas_cumprod).sqrt() * latents


def test_prediction_target_per_prediction_type():
    args = {"latents": LATENTS, "noise": NOISE, "timesteps": TIMESTEPS}
    assert torch.equal(prediction_target("epsilon", **args), NOISE)
    assert torch.equal(prediction_target("sample", **args), LATENTS)
    v = prediction_target("v_prediction", get_velocity=_velocity, **args)
    # t=0: 0.8·2 − 0.6·1 = 1.0 ; t=1: 0.6·2 − 0.8·1 = 0.4 (swapped arguments would give −0.4, −1.0)
    _close(v[:, 0, 0, 0], [1.0, 0.4])
    with pytest.raises(ValueError, match="get_velocity"):
        prediction_target("v_prediction", **args)
    with pytest.raises(ValueError, match="unknown prediction type"):
        prediction_target("flow", **args)


@pytest.mark.parametrize(("prediction_type", "target_value"), [("epsilon", 2.0), ("sample", 1.0)])
def test_errors_are_measured_against_the_prediction_types_target(prediction_type, target_value):
    latents = torch.ones(4, 1, 2, 2)
    target = prediction_target(prediction_type, latents=latents, noise=2 * latents, timesteps=TIMESTEPS)
    pred = torch.full((4, 1, 2, 2), 1.5)
    e = pair_errors(model_pred=pred, ref_pred=pred, target=target)
    _close(e.mse_w, [(1.5 - target_value) ** 2] * 2)  # 0.25 either way, against a different target
