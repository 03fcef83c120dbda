"""Text conditioning the way the diffusers pipelines build it, as keyword arguments for the UNet.

``encode_captions`` runs the tokenizers and text encoders once (what the text-embedding cache will store);
``unet_conditioning`` turns that into ``unet(noisy, t, **kwargs)``'s keywords, adding SDXL's
``text_time`` conditions (pooled ``text_embeds`` and six ``time_ids``: original size, crop corner, target
size) as ``StableDiffusionXLPipeline._get_add_time_ids`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from training.engine.diffusion.models import DiffusionComponents


@dataclass(frozen=True)
class TextConditioning:
    """The encoded captions of a batch."""

    hidden: torch.Tensor
    """``(B, T, D)`` cross-attention states: SD's last hidden state, or SDXL's two penultimate hidden
    states concatenated along ``D``."""
    pooled: torch.Tensor | None = None
    """``(B, P)`` SDXL's pooled embedding (``text_encoder_2``'s projected ``text_embeds``); else ``None``."""


@torch.no_grad()
def encode_captions(components: DiffusionComponents, captions: Sequence[str]) -> TextConditioning:
    """Tokenize (padded to each tokenizer's ``model_max_length``) and encode ``captions``."""
    if not components.text_encoders:
        raise ValueError("this diffusion model takes no text conditioning")
    device = components.unet.device
    hidden, pooled = [], None
    for tokenizer, encoder in zip(components.tokenizers, components.text_encoders, strict=True):
        ids = tokenizer(
            list(captions),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        if components.kind == "sdxl":
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]
        else:
            hidden.append(encoder(ids)[0])
    return TextConditioning(hidden=torch.cat(hidden, dim=-1), pooled=pooled)


def sdxl_time_ids(
    batch: int,
    *,
    original_size: tuple[int, int],
    target_size: tuple[int, int],
    crop_top_left: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """``(batch, 6)`` SDXL micro-conditioning: ``original_size + crop_top_left + target_size``."""
    row = torch.tensor([[*original_size, *crop_top_left, *target_size]], dtype=torch.float32)
    return row.expand(batch, 6)


def unet_conditioning(
    components: DiffusionComponents,
    text: TextConditioning | None,
    *,
    original_size: tuple[int, int] | None = None,
    crop_top_left: tuple[int, int] = (0, 0),
) -> dict:
    """Keywords for ``components.unet(sample, timestep, **kwargs)``; ``original_size`` defaults to the
    model's resolution (images resized to it, as the training data is)."""
    if text is None:
        return {}
    kwargs: dict = {"encoder_hidden_states": text.hidden.to(components.unet.dtype)}
    if components.kind == "sdxl":
        side = components.resolution
        time_ids = sdxl_time_ids(
            text.hidden.shape[0],
            original_size=original_size or (side, side),
            target_size=(side, side),
            crop_top_left=crop_top_left,
        )
        kwargs["added_cond_kwargs"] = {
            "text_embeds": text.pooled.to(components.unet.dtype),
            "time_ids": time_ids.to(text.hidden.device, components.unet.dtype),
        }
    return kwargs
