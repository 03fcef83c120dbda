"""A diffusion UNet's trainable weights in diffusers layout: LoRA adapters through peft, or the full UNet.

* LoRA: ``unet.add_adapter`` (diffusers' peft integration) puts one adapter named ``default`` on the
  attention projections; the reference is the same UNet under ``disable_adapters()``, so no second UNet is
  held.  ``save_lora`` writes ``pytorch_lora_weights.safetensors`` with ``unet.``-prefixed peft keys, the
  file ``StableDiffusionPipeline.load_lora_weights(folder)`` (and the SDXL pipeline's) reads.
* Full fine-tuning: ``unet/`` written by ``save_pretrained``, loadable with
  ``UNet2DConditionModel.from_pretrained(folder, subfolder="unet")``.

``export_model_folder`` writes a complete model folder (the base's VAE, text encoders, tokenizers and
scheduler, hard-linked, beside the trained UNet with any adapter merged), which ``load_diffusion`` and the
diffusers pipelines load like the base, so a trained model can be the next job's base.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LORA_FILE = "pytorch_lora_weights.safetensors"
PREFIX = "unet."
ADAPTER = "default"


def attach_lora(
    unet: torch.nn.Module, *, rank: int, alpha: float, dropout: float, target_modules: Sequence[str]
) -> None:
    """Add one trainable LoRA adapter to ``unet`` in place; every other weight stays frozen."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )
    unet.add_adapter(config, adapter_name=ADAPTER)


def lora_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet, adapter_name=ADAPTER)


def save_lora(unet: torch.nn.Module, folder: Path) -> Path:
    """The adapter's weights as ``folder/pytorch_lora_weights.safetensors`` (keys ``unet.<module>…``)."""
    state = {PREFIX + k: v.detach().float().contiguous().cpu() for k, v in lora_state(unet).items()}
    path = Path(folder) / LORA_FILE
    save_file(state, path, metadata={"format": "pt"})
    return path


def load_lora(unet: torch.nn.Module, folder: Path) -> None:
    """Load ``save_lora``'s file into the adapter already attached to ``unet``, in place."""
    from peft.utils import set_peft_model_state_dict

    raw = load_file(Path(folder) / LORA_FILE)
    state = {k.removeprefix(PREFIX): v for k, v in raw.items()}
    result = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise RuntimeError(f"{folder / LORA_FILE}: weights for no adapter module: {unexpected[:3]}")


def save_unet(unet: torch.nn.Module, folder: Path) -> None:
    unet.save_pretrained(Path(folder) / "unet", safe_serialization=True)


def load_unet_weights(unet: torch.nn.Module, folder: Path) -> None:
    """Load a ``save_unet`` checkpoint's weights into an already-built UNet, in place."""
    state = {}
    for shard in sorted((Path(folder) / "unet").glob("*.safetensors")):
        state.update(load_file(shard))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def merge_lora(unet: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base weights and remove it: a plain UNet."""
    unet.fuse_lora(adapter_names=[ADAPTER])
    unet.unload_lora()
    return unet


def _link(source: Path, target: Path) -> None:
    """Hard-link a file or a folder's files (a copy across file systems)."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for child in source.iterdir():
            _link(child, target / child.name)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def export_model_folder(base_folder: Path, unet: torch.nn.Module, folder: Path) -> Path:
    """A complete diffusers folder at ``folder``: every part of ``base_folder`` but its UNet, and
    ``unet`` (full weights) saved in its place."""
    base_folder, folder = Path(base_folder), Path(folder)
    for child in base_folder.iterdir():
        if child.name != "unet" and not child.name.startswith("."):
            _link(child, folder / child.name)
    save_unet(unet, folder)
    return folder
