"""Checkpoints in Hugging Face folder layout (peft adapter folders for LoRA) plus the state for exact resume.

``checkpoint-N/`` holds what the recipe's ``save`` writes (for causal LMs ``model.safetensors`` +
``config.json``, or ``adapter_model.safetensors`` + ``adapter_config.json``, and the tokenizer) and
``trainer_state.pt``: optimizer, scheduler, RNG states, the data position (optimizer step) and the recipe's
own state.  Loadable by ``from_pretrained`` / ``PeftModel.from_pretrained``.  ``prune_checkpoints`` deletes
those beyond the run's ``keep_checkpoints`` once a newer one is in place.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from training.engine.runtime.sharding import is_sharded, load_full_weights

STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint restores besides the weights."""

    step: int
    optimizer: dict
    scheduler: dict
    rng: dict
    """Rank 0's RNG states (the only process's, in a one-process run)."""
    extra: dict
    rank_rng: list[dict] | None = None
    """Every rank's RNG states, by rank, when more than one process wrote the checkpoint."""

    def rng_for(self, rank: int, world_size: int) -> dict:
        """The states rank ``rank`` resumes with: its own when the world is the one that wrote the
        checkpoint; else rank 0's, as every rank of a fresh run starts from the same seed."""
        if self.rank_rng is not None and len(self.rank_rng) == world_size:
            return self.rank_rng[rank]
        return self.rng


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    *,
    write_model: Callable[[Path], None],
    optimizer_state: dict,
    scheduler,
    step: int,
    extra: dict,
    guard: Callable[[], None] = lambda: None,
    rank_rng: list[dict] | None = None,
) -> Path:
    """Write a complete checkpoint atomically: the model through ``write_model(folder)`` (the recipe's
    ``save``) and the resume state go into a folder of this process's own, renamed into place once
    ``guard()`` (which raises when the run no longer owns its output folder) passes."""
    folder = Path(folder)
    tmp = private_folder(folder)
    write_model(tmp)
    state = {
        "step": step,
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict() if scheduler else {},
        "rng": rng_state(),
        "extra": extra,
    }
    if rank_rng is not None:
        state["rank_rng"] = rank_rng
    torch.save(state, tmp / STATE_FILE)
    return publish(tmp, folder, guard)


def private_folder(target: Path) -> Path:
    """A new, empty folder beside ``target`` that no other writer (another attempt at the same run) uses."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, target: Path, guard: Callable[[], None]) -> Path:
    """Replace ``target`` by the finished ``tmp`` once ``guard()`` passes (else ``tmp`` is removed)."""
    try:
        guard()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Every complete ``checkpoint-N`` (one whose ``trainer_state.pt`` is in place) as ``(N, folder)``,
    oldest first."""
    found = []
    for child in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete ``checkpoint-N`` with the highest N, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def prune_checkpoints(output_dir: Path, *, newest: Path, keep: int | None) -> list[Path]:
    """Delete the complete checkpoints older than ``newest`` (the one just put in place) beyond the ``keep``
    newest, ``newest`` counted; returns the folders deleted.  ``keep=None`` deletes nothing.

    A later checkpoint than ``newest`` (none in a normal run), an incomplete one, ``final/`` and the
    private folders of writers in progress are never touched, so the checkpoint a resume would read
    survives.  Each folder is first renamed to a hidden name and then removed: a deletion cut short leaves
    no half-deleted ``checkpoint-N`` for a resume or the artifact list to take for a complete one."""
    if keep is None:
        return []
    match = re.fullmatch(r"checkpoint-(\d+)", Path(newest).name)
    if match is None:
        raise ValueError(f"{newest}: not a checkpoint-N folder")
    older = [folder for step, folder in complete_checkpoints(output_dir) if step < int(match.group(1))]
    doomed = older[: max(0, len(older) - (keep - 1))]
    deleted = []
    for folder in doomed:
        hidden = folder.with_name(f".{folder.name}.{os.getpid()}-{secrets.token_hex(4)}.deleting")
        try:
            folder.rename(hidden)
        except FileNotFoundError:  # already gone
            continue
        shutil.rmtree(hidden, ignore_errors=True)
        deleted.append(folder)
    return deleted


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load a checkpoint's weights into an already-built model (full or peft-wrapped) in place."""
    folder = Path(folder)
    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
        return
    state = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(shard))
    if is_sharded(list(model.parameters())):
        load_full_weights(model, state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()


def load_state(folder: Path) -> ResumeState:
    raw = torch.load(Path(folder) / STATE_FILE, weights_only=False)
    return ResumeState(
        raw["step"], raw["optimizer"], raw["scheduler"], raw["rng"], raw.get("extra", {}), raw.get("rank_rng")
    )
