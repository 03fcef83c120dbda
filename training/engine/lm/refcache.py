"""Reference log-probs: computed once per (reference weights, tokenized pairs, precision), cached on disk.

The key hashes the reference model's weights and every token id and weight of every pair, so a change of
base model, dataset version, chat template, truncation or masks gives a new key: stale reuse cannot happen.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import TokenizedPair
from training.engine.lm.logps import segment_sums, token_logps
from training.engine.lm.models import REPO_ROOT
from training.engine.runtime.device import autocast
from training.engine.runtime.distributed import Dist


def default_cache_dir() -> Path:
    return Path(os.environ.get("REF_CACHE", REPO_ROOT / "var" / "ref_cache"))


def pairs_fingerprint(pairs: Sequence[TokenizedPair]) -> str:
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(
            repr((p.prompt_ids, p.chosen_ids, p.rejected_ids, p.chosen_weights, p.rejected_weights)).encode()
        )
    return digest.hexdigest()


def cache_key(model_fingerprint: str, pairs: Sequence[TokenizedPair], precision: str) -> str:
    text = f"v1|{model_fingerprint}|{pairs_fingerprint(pairs)}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()


@torch.no_grad()
def compute_reference(
    model: nn.Module,
    pairs: Sequence[TokenizedPair],
    collator: PackingCollator,
    *,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    between_batches: Callable[[], None] = lambda: None,
    dist: Dist | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, torch.Tensor]:
    """Sequence log-probs of chosen and rejected for every pair, in the order of ``pairs``;
    ``between_batches()`` runs before each batch (it may raise to stop the pass) and ``progress(batches
    done, batches)`` after each of this process's batches.  With ``dist`` of
    more than one process, each rank computes a contiguous share of the batches and every rank gets the
    whole, gathered."""
    dist = dist or Dist()
    was_training = model.training
    model.eval()
    chosen, rejected = [torch.zeros(0)], [torch.zeros(0)]
    starts = list(dist.shard(range(0, len(pairs), batch_size)))
    progress(0, len(starts))
    for done, start in enumerate(starts, start=1):
        between_batches()
        batch = collator(pairs[start : start + batch_size])
        with autocast(batch.input_ids.device, autocast_dtype):
            c, r = segment_sums(token_logps(model, batch), batch)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
        progress(done, len(starts))
    model.train(was_training)
    return {
        "chosen": dist.gather_concat(torch.cat(chosen)),
        "rejected": dist.gather_concat(torch.cat(rejected)),
    }


def cached_reference(
    model: nn.Module,
    model_fingerprint: str,
    pairs: Sequence[TokenizedPair],
    collator: PackingCollator,
    *,
    batch_size: int,
    precision: str,
    cache_dir: Path,
    between_batches: Callable[[], None] = lambda: None,
    dist: Dist | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """The pairs' reference log-probs from the cache, or computed and stored; returns (values, was_cached).
    With ``dist``, the ranks compute it together (each a share) unless every rank finds it cached, and
    rank 0 stores it."""
    dist = dist or Dist()
    path = Path(cache_dir) / f"{cache_key(model_fingerprint, pairs, precision)}.safetensors"
    if not dist.agree(not path.is_file()):  # computed by all ranks or by none: a lone rank would hang
        return load_file(path), True
    dtype = torch.bfloat16 if precision == "bf16" else None
    values = compute_reference(
        model,
        pairs,
        collator,
        batch_size=batch_size,
        autocast_dtype=dtype,
        between_batches=between_batches,
        dist=dist,
        progress=progress,
    )
    if not dist.is_main:
        return values, False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(values, tmp)
    tmp.replace(path)
    return values, False
