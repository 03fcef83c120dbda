"""Generations on eval prompts: greedy, sampled, or beam search on the policy's likelihood."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from training.engine.lm.data import prompt_token_ids


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode."""

    max_new_tokens: int = 64
    """Most tokens to generate per prompt."""
    mode: str = "greedy"
    """greedy, sample, or beam."""
    temperature: float = 1.0
    """Sampling temperature (mode sample)."""
    top_p: float = 1.0
    """Nucleus mass (mode sample)."""
    num_beams: int = 4
    """Beams (mode beam): reward-guided search on a DPO policy."""
    seed: int = 0
    """Seed for sampling."""

    def __post_init__(self) -> None:
        if self.mode not in {"greedy", "sample", "beam"}:
            raise ValueError(f"mode: greedy, sample or beam, got {self.mode!r}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens: must be positive, got {self.max_new_tokens}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.num_beams < 1:
            raise ValueError("temperature must be > 0, top_p in (0, 1], num_beams ≥ 1")


def _prompt_ids(tokenizer, prompt: str | Sequence[dict]) -> torch.Tensor:
    return torch.tensor([prompt_token_ids(tokenizer, prompt)])


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer, prompts: Sequence, config: GenerationConfig = GenerationConfig()
) -> list[str]:
    """One completion per prompt (plain string or chat messages), special tokens stripped."""
    model.eval()
    torch.manual_seed(config.seed)
    kwargs = {
        "max_new_tokens": config.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
    }
    if config.mode == "sample":
        kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
    elif config.mode == "beam":
        kwargs.update(do_sample=False, num_beams=config.num_beams, early_stopping=True)
    else:
        kwargs.update(do_sample=False)
    outputs = []
    for prompt in prompts:
        ids = _prompt_ids(tokenizer, prompt).to(model.device)
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), eos_token_id=tokenizer.eos_token_id, **kwargs
        )
        outputs.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return outputs
