"""Checkpoints in Hugging Face folder layout (peft adapter folders for LoRA) plus the state for exact resume.

``checkpoint-N/`` holds what the recipe's ``save`` writes (for causal LMs ``model.safetensors`` +
``config.json``, or ``adapter_model.safetensors`` + ``adapter_config.json``, and the tokenizer) and
``trainer_state.pt``: optimizer, scheduler, RNG states, the data position (optimizer step) and the recipe's
own state.  Loadable by ``from_pretrained`` / ``PeftModel.from_pretrained``.
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


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete ``checkpoint-N`` with the highest N, or None."""
    found = []
    for child in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


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
