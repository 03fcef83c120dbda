"""Sampling images from a loaded diffusion model: seeded, deterministic DDIM, classifier-free guidance.

Every image has its own seed: its starting noise is drawn from ``torch.Generator().manual_seed(seed)`` on
the CPU, and DDIM with η = 0 adds no noise after that, so an image depends on its caption, seed, step count
and guidance only, not on the batch it was drawn in, the device, or the global RNG (sampling during
training leaves the run's RNG, and so its exact resume, untouched).  The scheduler is a ``DDIMScheduler``
built from the model's own scheduler config (its betas and prediction type).

Images come back as ``[N, C, R, R]`` float32 in [-1, 1]; ``to_pil`` and ``png_bytes`` turn them into files.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image

from training.engine.diffusion.conditioning import TextConditioning, encode_captions, unet_conditioning
from training.engine.diffusion.models import DiffusionComponents


def sampling_scheduler(components: DiffusionComponents, steps: int) -> DDIMScheduler:
    scheduler = DDIMScheduler.from_config(components.scheduler_config)
    scheduler.set_timesteps(steps)
    return scheduler


def initial_noise(components: DiffusionComponents, seeds: Sequence[int]) -> torch.Tensor:
    """``[N, C, h, w]`` standard normal noise, image i drawn from a CPU generator seeded ``seeds[i]``."""
    config = components.unet.config
    side = components.resolution // components.vae_scale_factor
    shape = (config.in_channels, side, side)
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _take(text: TextConditioning, rows: slice) -> TextConditioning:
    return TextConditioning(text.hidden[rows], None if text.pooled is None else text.pooled[rows])


def _cat(a: TextConditioning, b: TextConditioning) -> TextConditioning:
    pooled = None if a.pooled is None else torch.cat([a.pooled, b.pooled])
    return TextConditioning(torch.cat([a.hidden, b.hidden]), pooled)


def _repeat(text: TextConditioning, n: int) -> TextConditioning:
    pooled = None if text.pooled is None else text.pooled.expand(n, -1)
    return TextConditioning(text.hidden.expand(n, -1, -1), pooled)


@torch.no_grad()
def decode(components: DiffusionComponents, latents: torch.Tensor) -> torch.Tensor:
    """What the UNet denoised → pixels in [-1, 1] (the VAE decoder, or the pixels themselves)."""
    vae = components.vae
    if vae is None:
        return latents.float().clamp(-1, 1).cpu()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scaled = latents / vae.config.scaling_factor + shift
    return vae.decode(scaled.to(vae.dtype)).sample.float().clamp(-1, 1).cpu()


@torch.no_grad()
def sample_images(
    components: DiffusionComponents,
    *,
    seeds: Sequence[int],
    captions: Sequence[str] | None = None,
    text: TextConditioning | None = None,
    negative: TextConditioning | None = None,
    steps: int = 25,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
    autocast_dtype: torch.dtype | None = None,
    between_batches: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """One image per seed, for ``captions`` (encoded here) or pre-encoded ``text`` (one row per seed);
    an unconditioned model takes neither.  ``guidance_scale`` > 1 mixes in the prediction for
    ``negative`` (default: the empty caption) as the diffusers pipelines do."""
    if components.conditioned and text is None:
        if captions is None or len(captions) != len(seeds):
            raise ValueError("a caption-conditioned model needs one caption (or encoded text) per seed")
        text = encode_captions(components, list(captions))
    guided = components.conditioned and guidance_scale > 1.0
    if guided and negative is None:
        negative = encode_captions(components, [""])
    unet = components.unet
    device = unet.device
    out = []
    for start in range(0, len(seeds), batch_size):
        between_batches()
        rows = slice(start, start + batch_size)
        part = None if text is None else _take(text, rows)
        x = _denoise(
            components,
            initial_noise(components, seeds[rows]),
            part,
            negative,
            steps,
            guided,
            guidance_scale,
            device,
            autocast_dtype,
        )
        out.append(decode(components, x))
    return torch.cat(out)


def _denoise(components, x, text, negative, steps, guided, guidance_scale, device, autocast_dtype):
    scheduler = sampling_scheduler(components, steps)
    n = x.shape[0]
    if text is not None and guided:
        text = _cat(_repeat(negative, n), text)
    cond = unet_conditioning(components, _to(text, device))
    x = (x * scheduler.init_noise_sigma).to(device)
    for t in scheduler.timesteps:
        model_in = torch.cat([x, x]) if guided else x
        model_in = scheduler.scale_model_input(model_in, t).to(components.unet.dtype)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            pred = components.unet(model_in, t, **cond).sample.float()
        if guided:
            uncond, conditioned = pred.chunk(2)
            pred = uncond + guidance_scale * (conditioned - uncond)
        x = scheduler.step(pred, t, x).prev_sample
    return x


def _to(text: TextConditioning | None, device: torch.device) -> TextConditioning | None:
    if text is None:
        return None
    pooled = None if text.pooled is None else text.pooled.to(device)
    return TextConditioning(text.hidden.to(device), pooled)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``[N, C, R, R]`` in [-1, 1] → Pillow images (``L`` for one channel, ``RGB`` for three)."""
    array = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if array.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in array]
    return [Image.fromarray(np.ascontiguousarray(a), mode="RGB") for a in array]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
