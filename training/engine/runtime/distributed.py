"""The run's place among its processes, when ``torchrun`` starts more than one: rank, world, what to share.

``torchrun`` (the launcher ``accelerate launch`` also uses) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous address; ``Dist.from_env`` joins that process group (Gloo on CPU, NCCL on CUDA) and a
run without them is one process of a world of one, for which every method here is the identity.

How a run of N processes repeats a run of one (``docs/architecture.md``, "More than one process"):
every micro-batch of the step plan (the same plan, the same global batch) is cut into N contiguous shards,
one per rank; each rank scales its shard's loss by N·|shard|/|micro-batch| and DDP averages the gradients,
so the summed gradient is the one-process gradient; the step's metrics are the examples-weighted means over
all ranks; a cancel is agreed on by all ranks before each step; rank 0 alone writes metrics, samples,
checkpoints and ``final/``.

The gradients are averaged as DDP averages them (bucketed all-reduce over the process group, divided by
the world size) but once per optimizer step, after the last micro-batch, which is what DDP's ``no_sync``
gives under gradient accumulation.  The DDP wrapper itself cannot be used: its hooks run on the wrapped
module's own forward, and the engine's packed forward calls a causal LM's body row by row and its head
once (``lm/logps.py``), never the root module.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

BUCKET_BYTES = 25 * 2**20
"""Gradients are all-reduced in flat buckets of about this size (DDP's default ``bucket_cap_mb``)."""
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("PREFSTUDIO_DIST_TIMEOUT_MINUTES", "10")))
"""How long a collective waits for a rank that stopped answering before the run fails (not hangs)."""


class DistributedError(RuntimeError):
    """A run that cannot go on across its processes (a strategy or recipe that does not support it)."""


@dataclass(frozen=True)
class Dist:
    """Rank ``rank`` of ``world_size`` processes (``local_rank`` on this node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        """Join the process group ``torchrun`` describes in the environment (once per process); a world of
        one when it describes none."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch_dist.init_process_group(backend=backend, timeout=TIMEOUT)
        return cls(rank=rank, world_size=world, local_rank=local)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_spec(self, spec: str) -> str:
        """The device this rank computes on: its own GPU (``cuda:LOCAL_RANK``) when ``spec`` asks for CUDA."""
        wants_cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
        return f"cuda:{self.local_rank}" if self.active and wants_cuda else spec

    def shard(self, positions: Sequence[int]) -> list[int]:
        """This rank's contiguous share of a micro-batch (shares differ in size by at most one)."""
        return list(positions[self.share_of(len(positions))])

    def share_of(self, n: int) -> slice:
        """Where this rank's share (``shard``) lies in a sequence of ``n``."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a cancel one rank saw stops them all)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
        return bool(value.item())

    def weighted_means(self, sums: dict[str, float], examples: float, tokens: int) -> tuple[dict, float, int]:
        """``(means, examples, tokens)`` over all ranks from this rank's examples-weighted metric sums."""
        if not self.active:
            return {k: v / examples for k, v in sums.items()}, examples, tokens
        names = sorted(sums)
        values = torch.tensor([*(sums[k] for k in names), examples, float(tokens)], dtype=torch.float64)
        torch_dist.all_reduce(values)
        total = float(values[-2])
        return {k: float(values[i]) / total for i, k in enumerate(names)}, total, int(values[-1])

    def gather_objects(self, value) -> list | None:
        """Every rank's picklable ``value``, by rank, on every rank (None in a world of one)."""
        if not self.active:
            return None
        values = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def gather_concat(self, value: torch.Tensor) -> torch.Tensor:
        """Every rank's ``value`` (1-D, any length, the same dtype) concatenated in rank order, on every
        rank: with contiguous shards (``shard``), the whole in its original order."""
        if not self.active:
            return value
        length = torch.tensor([value.numel()])
        lengths = [torch.zeros_like(length) for _ in range(self.world_size)]
        torch_dist.all_gather(lengths, length)
        longest = int(max(lengths).item())
        padded = torch.zeros(longest, dtype=value.dtype)
        padded[: value.numel()] = value.cpu()
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        torch_dist.all_gather(parts, padded)
        return torch.cat([part[: int(n.item())] for part, n in zip(parts, lengths, strict=True)])

    def gather_rows(self, value: torch.Tensor | None) -> torch.Tensor:
        """Every rank's rows (a tensor ``[n, ...]``, or None for a rank with no share) concatenated along
        the first dimension in rank order, on every rank."""
        if not self.active:
            assert value is not None, "a world of one has every row"
            return value
        shapes = self.gather_objects(None if value is None else (tuple(value.shape[1:]), value.dtype))
        trailing, dtype = next(shape for shape in shapes if shape is not None)
        flat = value.reshape(-1) if value is not None else torch.zeros(0, dtype=dtype)
        return self.gather_concat(flat).reshape(-1, *trailing)

    def broadcast_from_main(self, params: Sequence[torch.Tensor]) -> None:
        """Every rank starts from rank 0's trainable weights (as DDP does when it wraps a module)."""
        if self.active:
            for bucket in _buckets(list(params)):
                flat = _flatten([p.detach() for p in bucket])
                torch_dist.broadcast(flat, src=0)
                _copy_back(flat, [p.data for p in bucket])

    def average_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Average the accumulated gradients of ``params`` over the ranks, in place (a parameter with no
        gradient on this rank counts as a zero gradient, so every rank reduces the same buckets)."""
        if not self.active:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        for bucket in _buckets(grads):
            flat = _flatten(bucket)
            torch_dist.all_reduce(flat)
            flat /= self.world_size
            _copy_back(flat, bucket)


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of tensors of one dtype and device, each up to ``BUCKET_BYTES`` (one tensor may exceed it)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        last = buckets[-1][-1] if buckets else None
        fits = last is not None and last.dtype == t.dtype and last.device == t.device
        if not fits or size + t.numel() * t.element_size() > BUCKET_BYTES:
            buckets.append([])
            size = 0
        buckets[-1].append(t)
        size += t.numel() * t.element_size()
    return buckets


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _copy_back(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def leave_process_group(*, synchronise: bool = False) -> None:
    """End this process's part in the process group, if it joined one (after every rank got here, with
    ``synchronise``)."""
    if torch_dist.is_initialized():
        if synchronise:
            torch_dist.barrier()
        torch_dist.destroy_process_group()
