"""FSDP: the trainable model's weights, gradients and optimizer state sharded across the processes.

``strategy: fsdp`` shards with PyTorch's ``fully_shard`` (FSDP2, the per-parameter sharding torchtitan and
torchtune use): one unit per decoder layer (the transformer-layer wrap policy) and one root unit holding the
rest (embeddings, final norm, LM head, tied or not).  A unit's weights are all-gathered for its forward and
freed after it (``fsdp_sharding: full``, ZeRO-3) or kept until its backward (``grad_op``, ZeRO-2); its
gradients are reduce-scattered, averaged over the ranks, as DDP averages them, so the one-process step
arithmetic of ``runtime/distributed.py`` holds unchanged.

The engine's packed forward never calls the root module (it runs the body row by row and the head once), so
``shard`` gives the root an ``engine_call`` method that FSDP treats as a forward (its hooks gather the root
unit and schedule the gradient reduction); ``as_forward`` runs a packed forward through it.

Checkpoints stay in the one-process layout: the full weights and the full optimizer state (keyed by
parameter position, as ``Optimizer.state_dict`` keys it) are gathered to rank 0, which writes them.  So a
checkpoint written under FSDP resumes under any world size and strategy, and one written by one process
resumes under FSDP: every rank reads the full state and keeps its own shard.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

STRATEGIES = ("ddp", "fsdp")
SHARDINGS = ("full", "grad_op")
FSDP_WRAPS = ("layer", "model")


def shard(
    root: nn.Module,
    layers: Sequence[nn.Module],
    *,
    sharding: str = "full",
    param_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Shard ``root`` in place: a unit per module of ``layers``, then the root unit.  With ``param_dtype``
    (bf16 runs) each unit gathers its weights in that dtype for its forward and backward (half the traffic
    and unsharded memory) while the sharded master weights, the gradients' reduction and the optimizer
    stay float32 (FSDP's ``MixedPrecisionPolicy``)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    reshard = sharding == "full"
    policy = MixedPrecisionPolicy(
        param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None
    )
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard, mp_policy=policy)
    fully_shard(root, reshard_after_forward=reshard, mp_policy=policy)
    root.engine_call = types.MethodType(_call, root)
    register_fsdp_forward_method(root, "engine_call")
    return root


def _call(_root: nn.Module, fn: Callable, *args: Any) -> Any:
    return fn(*args)


def as_forward(model: nn.Module, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, run as the forward of ``model``'s root FSDP unit when the model is sharded."""
    call = model.__dict__.get("engine_call")
    return call(fn, *args) if call is not None else fn(*args)


def gathered_bits(root: nn.Module) -> int:
    """Bits per weight a sharded ``root`` gathers its units in (32, or 16 under a bf16 policy)."""
    policy = root._get_fsdp_state()._mp_policy  # FSDP2 keeps no public accessor for a unit's policy
    dtype = policy.param_dtype or next(root.parameters()).dtype
    return torch.finfo(dtype).bits


def is_sharded(params: Sequence[torch.Tensor]) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in params)


def held_fraction(params: Sequence[torch.Tensor]) -> float:
    """The share of the trainable weights this process holds (1 unsharded; about 1/N under FSDP)."""
    from torch.distributed.tensor import DTensor

    total = sum(p.numel() for p in params)
    held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return held / total if total else 1.0


def local_value(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of a value that may be a DTensor (the global grad norm FSDP's clipping returns)."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def _positions(root: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameter names in the optimizer's own order (the keys of ``Optimizer.state_dict``)."""
    names = {id(p): name for name, p in root.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _aliases(root: nn.Module) -> set[str]:
    every = {name for name, _ in root.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in root.named_parameters()}


def gathered_state(root: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict]:
    """Every rank calls this together: the full model state dict and optimizer state (by position), on
    CPU, in rank 0's hands (the other ranks get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(root, options=options)
    for alias in _aliases(root):  # a tied head is the embedding: one tensor, saved once as one process does
        model_state.pop(alias, None)
    if optimizer is None:
        return model_state, {}
    by_name = get_optimizer_state_dict(root, optimizer, options=options)
    if not by_name:
        return model_state, {}
    index = {name: i for i, name in enumerate(_positions(root, optimizer))}
    return model_state, {
        "state": {index[name]: value for name, value in by_name["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in by_name["param_groups"]
        ],
    }


def load_optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimizer state (by position) into a sharded model's optimizer: each rank keeps its
    shard of every moment."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _positions(root, optimizer)
    by_name = {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(root, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def load_full_weights(root: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load full (unsharded) weights into a sharded model; each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(root, state, options=StateDictOptions(full_state_dict=True, strict=False))
