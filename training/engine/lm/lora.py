"""LoRA adapters on a causal LM through peft (the reference is the base with the adapter disabled)."""

from __future__ import annotations

from torch import nn


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
