"""LoRA adapters on a causal LM through peft (the reference is the base with the adapter disabled), and
linear combinations of saved adapters as weight deltas on their common base."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


def attach_lora(model: nn.Module, config, adapter_name: str = "default") -> nn.Module:
    """Wrap ``model`` in a peft model with one LoRA adapter from the config's ``lora_*`` fields; only the
    adapter's weights are trainable."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora, adapter_name=adapter_name)


def merged_with_adapter(base: nn.Module, adapter_folder) -> nn.Module:
    """``base`` with the peft adapter saved in ``adapter_folder`` merged into its weights: a plain model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, adapter_folder).merge_and_unload()


def lora_delta(adapter_folder) -> dict[str, Tensor]:
    """``ΔW = scale·B·A`` (float64) of every layer of the peft LoRA adapter saved in ``adapter_folder``,
    keyed by the base model's weight name (``model.layers.0.self_attn.q_proj.weight``); ``scale`` is
    ``lora_alpha / r`` (``lora_alpha / √r`` with rsLoRA), as peft's merge applies it.  Adapters with
    per-layer ranks, DoRA, ``fan_in_fan_out`` or extra saved modules are refused, not half-read."""
    from safetensors.torch import load_file

    folder = Path(adapter_folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    for field in ("rank_pattern", "alpha_pattern", "use_dora", "fan_in_fan_out", "modules_to_save"):
        if config.get(field):
            raise ValueError(f"{folder}: adapter sets {field}; only plain LoRA deltas are combined")
    rank, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    saved = load_file(folder / "adapter_model.safetensors")
    unknown = [k for k in saved if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if unknown:
        raise ValueError(f"{folder}: not LoRA weights: {unknown[:3]}")
    deltas = {}
    for key, a in saved.items():
        if key.endswith(".lora_A.weight"):
            b = saved[key.removesuffix(".lora_A.weight") + ".lora_B.weight"]
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
            deltas[name] = scale * (b.double() @ a.double())
    return deltas


@torch.no_grad()
def add_weighted_deltas(
    model: nn.Module, deltas: Sequence[dict[str, Tensor]], weights: Sequence[float]
) -> nn.Module:
    """``model`` with ``W ← W + Σᵢ wᵢ·ΔWᵢ`` in place for every weight a delta names (``lora_delta``): the
    linear combination of LoRA modules trained on this base.  (peft's ``add_weighted_adapter`` with
    ``"linear"`` instead mixes the A's and the B's separately, so its product carries cross terms
    ``√(wᵢwⱼ)·Bᵢ·Aⱼ``; ``"cat"`` is exact only up to the new adapter's own scaling.)"""
    if len(deltas) != len(weights):
        raise ValueError(f"{len(deltas)} deltas but {len(weights)} weights")
    params = dict(model.named_parameters())
    names = sorted(set().union(*deltas)) if deltas else []
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no weight {missing[0]!r} that a LoRA delta names")
    for name in names:
        param = params[name]
        total = sum(w * d[name] for d, w in zip(deltas, weights, strict=True) if name in d)
        param.copy_((param.double() + total.to(param.device)).to(param.dtype))
    return model
