"""AdamW and the warmup + constant/linear/cosine schedule, plus the step plan (data order)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from training.engine.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig, lr: float | None = None) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=lr if lr is not None else config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
        fused=_can_fuse(params),
    )


def _can_fuse(params: list[nn.Parameter]) -> bool:
    """The fused AdamW kernel (one pass over each tensor instead of a dozen) takes float CPU/CUDA tensors."""
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def lr_factor(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer, config: TrainConfig, total_steps: int) -> LambdaLR:
    warmup = math.ceil(config.warmup_ratio * total_steps)
    return LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total_steps, warmup=warmup, kind=config.lr_scheduler)
    )


def step_plan(n_pairs: int, config: TrainConfig) -> list[list[list[int]]]:
    """Every optimizer step's micro-batches (lists of pair positions), over all epochs, seeded.

    Each epoch is a fresh permutation (``seed + epoch``) cut into micro-batches of ``batch_size``;
    consecutive micro-batches of an epoch form one step; ``max_steps`` truncates the plan.
    """
    plan: list[list[list[int]]] = []
    for epoch in range(config.epochs):
        if config.shuffle:
            generator = torch.Generator().manual_seed(config.seed + epoch)
            order = torch.randperm(n_pairs, generator=generator).tolist()
        else:
            order = list(range(n_pairs))
        micro = [order[i : i + config.batch_size] for i in range(0, n_pairs, config.batch_size)]
        accum = config.gradient_accumulation_steps
        plan += [micro[i : i + accum] for i in range(0, len(micro), accum)]
        if config.max_steps and len(plan) >= config.max_steps:
            break  # later epochs would be cut anyway; a huge ``epochs`` costs nothing
    return plan[: config.max_steps] if config.max_steps else plan
