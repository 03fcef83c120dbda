"""AdamW, the warmup + constant/linear/cosine schedule, and the step plan (data order)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from training.engine.runtime.config import RunConfig
from training.engine.runtime.sharding import is_sharded


def build_optimizer(param_groups: list[dict[str, Any]], config: RunConfig) -> torch.optim.AdamW:
    """AdamW over the recipe's groups, each starting at ``config.learning_rate``."""
    params = [p for group in param_groups for p in group["params"]]
    return torch.optim.AdamW(
        [{**group, "params": list(group["params"])} for group in param_groups],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
        fused=_can_fuse(params),
    )


def _can_fuse(params: list[nn.Parameter]) -> bool:
    """The fused AdamW kernel (one pass over each tensor instead of a dozen) takes float CPU/CUDA tensors."""
    if is_sharded(params):
        return False  # FSDP's DTensor shards take the multi-tensor kernel
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


def build_scheduler(
    optimizer, config: RunConfig, total_steps: int, scales: Callable[[], Sequence[float]] = tuple
) -> LambdaLR:
    """The schedule over ``total_steps``; group i's rate is also multiplied by ``scales()[i]`` (the
    recipe's ``lr_scales``, read at every step; empty = 1)."""
    warmup = math.ceil(config.warmup_ratio * total_steps)

    def group_lambda(index: int):
        def factor(step: int) -> float:
            scale = scales()
            base = lr_factor(step, total=total_steps, warmup=warmup, kind=config.lr_scheduler)
            return base * (scale[index] if scale else 1.0)

        return factor

    return LambdaLR(optimizer, [group_lambda(i) for i in range(len(optimizer.param_groups))])


def step_count(n_examples: int, config: RunConfig) -> int:
    """``len(step_plan(n_examples, config))``, counted without building the plan."""
    micro_batches = math.ceil(n_examples / config.batch_size)
    total = config.epochs * math.ceil(micro_batches / config.gradient_accumulation_steps)
    return min(total, config.max_steps) if config.max_steps else total


def step_plan(n_examples: int, config: RunConfig, *, shuffle: bool | None = None) -> list[list[list[int]]]:
    """Every optimizer step's micro-batches (lists of example positions), over all epochs, seeded.

    Each epoch is a fresh permutation (``seed + epoch``, unless ``shuffle`` — by default the config's —
    is off) cut into micro-batches of ``batch_size``; consecutive micro-batches of an epoch form one step;
    ``max_steps`` truncates the plan.
    """
    shuffle = config.shuffle if shuffle is None else shuffle
    plan: list[list[list[int]]] = []
    for epoch in range(config.epochs):
        if shuffle:
            generator = torch.Generator().manual_seed(config.seed + epoch)
            order = torch.randperm(n_examples, generator=generator).tolist()
        else:
            order = list(range(n_examples))
        micro = [order[i : i + config.batch_size] for i in range(0, n_examples, config.batch_size)]
        accum = config.gradient_accumulation_steps
        plan += [micro[i : i + accum] for i in range(0, len(micro), accum)]
        if config.max_steps and len(plan) >= config.max_steps:
            break  # later epochs would be cut anyway; a huge ``epochs`` costs nothing
    return plan[: config.max_steps] if config.max_steps else plan
