"""Diffusion-DPO (Wallace et al., 2023): pure functions of noise-prediction errors, no diffusers import.

One step of the recipe, for a batch of B pairs sharing one timestep and one noise per pair:
``target = prediction_target(...)`` for the stacked ``[2B, ...]`` clean latents (winners first, then
losers), one forward of the model and one of the reference over the same ``[2B, ...]`` noisy input, then
``errors = pair_errors(model_pred=…, ref_pred=…, target=…)`` and ``loss, metrics = diffusion_dpo(errors)``.

Notation (docs/methods.md): e_w, e_l are the model's per-sample mean squared errors on winner and loser,
e_w_ref, e_l_ref the reference's; the inner term is ``inner = (e_w − e_w_ref) − (e_l − e_l_ref)``, negative
when the model improved on the winner more than on the loser.

β convention: the loss is ``−log σ(−(β/2)·inner)``, the ½ of the paper and of its official launchers
(β = 5000).  The diffusers research example ``train_diffusion_dpo.py`` has no ½: its ``--beta_dpo b`` is
our ``beta = 2b`` (its default 2500 is our 5000), exactly, for the sigmoid and the IPO branch alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LOSS_TYPES = ("sigmoid", "ipo", "sft")

Velocity = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(latents, noise, timesteps) -> v``: a scheduler's ``get_velocity``, passed in as a callable."""


class PairErrors(NamedTuple):
    """Per-sample mean squared noise-prediction errors of a batch of pairs, each ``[B]`` float32.

    The model's keep their graph; the reference's are detached."""

    mse_w: Tensor
    mse_l: Tensor
    ref_mse_w: Tensor
    ref_mse_l: Tensor


class DiffusionObjectiveOutput(NamedTuple):
    """Per-pair losses ``[B]``, the implicit rewards ``−(β/2)(e − e_ref)`` of winner and loser, and the
    inner term ``(e_w − e_w_ref) − (e_l − e_l_ref)`` (rewards and inner detached)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    inner: Tensor


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    """``[N, ...]`` prediction and target → ``[N]``: squared error averaged over every non-batch dim,
    in float32 whatever the inputs' dtype (bf16 autocast predictions included)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    err = (pred.float() - target.float()) ** 2
    return err.reshape(err.shape[0], -1).mean(dim=1)


def pair_errors(*, model_pred: Tensor, ref_pred: Tensor, target: Tensor) -> PairErrors:
    """Errors of model and reference on ``[2B, ...]`` stacked batches: rows ``:B`` winners, ``B:`` losers
    (the layout of one forward over ``torch.cat([winners, losers])``)."""
    if model_pred.shape[0] % 2:
        raise ValueError(f"stacked batch needs winners then losers, got an odd size {model_pred.shape[0]}")
    mse_w, mse_l = per_sample_mse(model_pred, target).chunk(2)
    ref_w, ref_l = per_sample_mse(ref_pred.detach(), target).chunk(2)
    return PairErrors(mse_w, mse_l, ref_w, ref_l)


def prediction_target(
    prediction_type: str,
    *,
    latents: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    get_velocity: Velocity | None = None,
) -> Tensor:
    """What the network is trained to predict, per the scheduler's ``config.prediction_type``:
    ``"epsilon"`` → the noise, ``"v_prediction"`` → ``get_velocity(latents, noise, timesteps)``
    (pass ``scheduler.get_velocity``), ``"sample"`` → the clean latents."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return latents
    if prediction_type == "v_prediction":
        if get_velocity is None:
            raise ValueError("prediction type v_prediction needs get_velocity (the scheduler's)")
        return get_velocity(latents, noise, timesteps)
    raise ValueError(f"unknown prediction type {prediction_type!r}; choose from {PREDICTION_TYPES}")


def _check(beta: float, loss_type: str, sft_weight: float) -> None:
    if not (0.0 < beta < math.inf):
        raise ValueError(f"diffusion-dpo beta must be a finite number above 0, got {beta}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown diffusion-dpo loss type {loss_type!r}; choose from {LOSS_TYPES}")
    if not (0.0 <= sft_weight < math.inf):
        raise ValueError(f"sft_weight must be a finite number ≥ 0, got {sft_weight}")
    if loss_type == "sft" and sft_weight:
        raise ValueError("loss type sft is the winner denoising loss already; leave sft_weight at 0")


def diffusion_dpo_loss(
    errors: PairErrors, *, beta: float = 5000.0, loss_type: str = "sigmoid", sft_weight: float = 0.0
) -> DiffusionObjectiveOutput:
    """Per-pair losses for one of ``LOSS_TYPES``:

    - ``"sigmoid"``: ``−log σ(−(β/2)·inner)``, by logsigmoid so a large β stays finite;
    - ``"ipo"``: ``(−inner − 1/β)²``, a squared loss toward a fixed margin (the diffusers example's IPO
      branch ``(logits − 1/(2·beta_dpo))²`` with ``logits = −inner`` and ``beta_dpo = β/2``);
    - ``"sft"``: ``e_w``, the plain denoising loss on winners (the baseline; no reference needed, but
      its errors are still reported).

    ``sft_weight`` α adds ``α·e_w`` to the sigmoid or IPO loss."""
    _check(beta, loss_type, sft_weight)
    delta_w = errors.mse_w - errors.ref_mse_w
    delta_l = errors.mse_l - errors.ref_mse_l
    inner = delta_w - delta_l
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(-0.5 * beta * inner)
    elif loss_type == "ipo":
        losses = (-inner - 1.0 / beta) ** 2
    else:
        losses = errors.mse_w
    if sft_weight:
        losses = losses + sft_weight * errors.mse_w
    scale = -0.5 * beta
    return DiffusionObjectiveOutput(
        losses, scale * delta_w.detach(), scale * delta_l.detach(), inner.detach()
    )


def implicit_accuracy(inner: Tensor) -> Tensor:
    """Share of pairs whose inner term favours the winner (``inner < 0``); exact ties count ½."""
    return (inner < 0).float().mean() + 0.5 * (inner == 0).float().mean()


def diffusion_pair_metrics(
    out: DiffusionObjectiveOutput, errors: PairErrors, loss: Tensor
) -> dict[str, float]:
    """Metrics of one batch, named as in issue 12 and, for the rewards, as TRL's (``rewards/margins`` is
    ``−(β/2)·inner``, the sigmoid's argument)."""
    return {
        "loss": float(loss.detach()),
        "implicit_acc": float(implicit_accuracy(out.inner)),
        "mse/winner": float(errors.mse_w.detach().mean()),
        "mse/loser": float(errors.mse_l.detach().mean()),
        "mse/ref_winner": float(errors.ref_mse_w.mean()),
        "mse/ref_loser": float(errors.ref_mse_l.mean()),
        "diff/model": float((errors.mse_w - errors.mse_l).detach().mean()),
        "diff/ref": float((errors.ref_mse_w - errors.ref_mse_l).mean()),
        "inner": float(out.inner.mean()),
        "rewards/chosen": float(out.chosen_rewards.mean()),
        "rewards/rejected": float(out.rejected_rewards.mean()),
        "rewards/margins": float((out.chosen_rewards - out.rejected_rewards).mean()),
    }


def diffusion_dpo(
    errors: PairErrors, *, beta: float = 5000.0, loss_type: str = "sigmoid", sft_weight: float = 0.0
) -> tuple[Tensor, dict[str, float]]:
    """The batch's mean loss (to back-propagate) and its metrics."""
    out = diffusion_dpo_loss(errors, beta=beta, loss_type=loss_type, sft_weight=sft_weight)
    loss = out.losses.mean()
    return loss, diffusion_pair_metrics(out, errors, loss)
