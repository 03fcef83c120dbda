"""VAE latents and caption embeddings of image pairs: encoded once, cached on disk, reused by every epoch
and every job on the same (weights, pairs, resolution, precision).

Two safetensors files, each content-keyed like the reference log-prob cache (``lm/refcache.py``):

* ``latents-<key>.safetensors`` — ``images [M, C, h, w]`` (each distinct image once), and
  ``winner [N]`` / ``loser [N]`` indices into it; the key hashes ``fingerprint("vae")`` (or ``pixel`` for a
  pixel-space model), every pair's winner and loser *bytes* (sha256; the same name with other bytes is
  another key), the resolution, channels and precision;
* ``text-<key>.safetensors`` — ``hidden [U, T, D]`` (and SDXL's ``pooled [U, P]``) for each distinct
  caption, and ``caption [N]``; the key hashes ``fingerprint("text_encoders")``, the captions and the
  precision.  A model without text encoders stores no text file.

Latents are the posterior's **mean** (``latent_dist.mode()``), not a sample: the diffusers example draws a
fresh sample every step, but a cached sample would be one fixed draw anyway (no augmentation left), the
SD VAE's posterior std is ~1e-3 of its mean's scale, and the mean makes the cache independent of any RNG.
Stored latents are ``(mean − shift_factor) · scaling_factor`` (``shift_factor`` where the VAE config has
one, as SD3/Flux do), so they feed the UNet as they are.  A pixel-space model's "latents" are the [-1, 1]
pixels themselves.  Everything is stored as float32 whatever ``precision`` computed it.

Files are written to a temporary name and renamed (atomic); ``between_batches()`` runs before every
encoder batch (the runtime's cancel check: it may raise to stop the pass).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.engine.diffusion.conditioning import TextConditioning, encode_captions
from training.engine.diffusion.data import ImageExport, ImagePair, load_images
from training.engine.diffusion.models import DiffusionComponents
from training.engine.runtime.device import autocast
from training.engine.runtime.distributed import Dist

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
REPO_ROOT = Path(__file__).resolve().parents[3]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ENCODE_CACHE", REPO_ROOT / "var" / "encode_cache"))


@dataclass(frozen=True)
class EncodedPairs:
    """The cached encodings of N pairs; ``batch(indices)`` gives a training batch."""

    images: torch.Tensor
    """``[M, C, h, w]`` scaled latents (or pixels) of the distinct images."""
    winner: torch.Tensor
    """``[N]`` long: row of each pair's winner in ``images``."""
    loser: torch.Tensor
    """``[N]`` long: row of each pair's loser."""
    hidden: torch.Tensor | None = None
    """``[U, T, D]`` text hidden states of the distinct captions; None without text encoders."""
    pooled: torch.Tensor | None = None
    """``[U, P]`` SDXL's pooled caption embeddings; else None."""
    caption: torch.Tensor | None = None
    """``[N]`` long: row of each pair's caption in ``hidden``."""

    def __len__(self) -> int:
        return len(self.winner)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, TextConditioning | None]:
        """``(winners [B, C, h, w], losers [B, C, h, w], text of the B captions or None)``."""
        text = None
        if self.hidden is not None:
            rows = self.caption[indices]
            text = TextConditioning(self.hidden[rows], None if self.pooled is None else self.pooled[rows])
        return self.images[self.winner[indices]], self.images[self.loser[indices]], text


def images_digest(export: ImageExport, pairs: Sequence[ImagePair]) -> dict[str, str]:
    """sha256 of each distinct image's bytes, by name (each image read once)."""
    digests: dict[str, str] = {}
    for pair in pairs:
        for name in (pair.winner, pair.loser):
            if name not in digests:
                digests[name] = hashlib.sha256(export.read(name, line=pair.line)).hexdigest()
    return digests


def latents_key(
    vae_fingerprint: str, image_digests: Sequence[str], *, resolution: int, channels: int, precision: str
) -> str:
    """Key of the latents file: the VAE, every pair's (winner, loser) bytes in order, the geometry."""
    digest = hashlib.sha256(f"latents-v1|{vae_fingerprint}|{resolution}|{channels}|{precision}".encode())
    for value in image_digests:
        digest.update(f"|{value}".encode())
    return digest.hexdigest()


def text_key(text_fingerprint: str, captions: Sequence[str], *, precision: str) -> str:
    digest = hashlib.sha256(f"text-v1|{text_fingerprint}|{precision}".encode())
    for caption in captions:
        digest.update(b"|" + caption.encode())
    return digest.hexdigest()


def _distinct(values: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct values in first-seen order, and each value's row among them."""
    rows = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return list(rows), torch.tensor([rows[v] for v in values], dtype=torch.long)


def _store(path: Path, values: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in values.items()}, tmp)
    tmp.replace(path)


@torch.no_grad()
def encode_images(
    components: DiffusionComponents,
    pixels: torch.Tensor,
    *,
    precision: str = "fp32",
) -> torch.Tensor:
    """``[B, C, R, R]`` pixels in [-1, 1] → what the UNet denoises: scaled VAE posterior means, or the
    pixels themselves for a pixel-space model; float32 on the CPU."""
    vae = components.vae
    if vae is None:
        return pixels.float().cpu().contiguous()
    device = next(vae.parameters()).device
    with autocast(device, PRECISIONS[precision]):
        mean = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    # contiguous as stored: the VAE hands back channels-last strides, which the UNet's convolutions would
    # round differently from the cached (contiguous) copy, and a first run would not match a second
    return ((mean.float() - shift) * vae.config.scaling_factor).cpu().contiguous()


def _encode_all_images(
    components,
    export,
    named: list[tuple[str, int]],
    *,
    resolution,
    channels,
    precision,
    batch_size,
    between,
    dist,
) -> torch.Tensor:
    mine = dist.shard(named)  # each rank encodes a contiguous share; every rank gets the whole
    out = []
    for start in range(0, len(mine), batch_size):
        between()
        pixels = load_images(
            export, mine[start : start + batch_size], resolution=resolution, channels=channels
        )
        out.append(encode_images(components, pixels, precision=precision))
    return dist.gather_rows(torch.cat(out) if out else None)


def _encode_all_captions(
    components, captions, *, precision, batch_size, between, dist
) -> dict[str, torch.Tensor]:
    hidden, pooled = [], []
    device = components.text_encoders[0].device
    mine = dist.shard(captions)
    for start in range(0, len(mine), batch_size):
        between()
        with autocast(device, PRECISIONS[precision]):
            text = encode_captions(components, mine[start : start + batch_size])
        hidden.append(text.hidden.float().cpu())
        if text.pooled is not None:
            pooled.append(text.pooled.float().cpu())
    values = {"hidden": dist.gather_rows(torch.cat(hidden) if hidden else None)}
    has_pooled = dist.agree(bool(pooled))
    if has_pooled:
        values["pooled"] = dist.gather_rows(torch.cat(pooled) if pooled else None)
    return values


def _cached_latents(
    components, export, pairs, *, resolution, precision, batch_size, cache_dir, between, dist
):
    """``(images, winner, loser, was_cached)``; images are deduplicated by their bytes' digest."""
    channels = 3 if components.vae is not None else components.unet.config.in_channels
    by_name = images_digest(export, pairs)
    sequence = [by_name[name] for p in pairs for name in (p.winner, p.loser)]
    distinct, rows = _distinct(sequence)
    vae_fp = components.fingerprint("vae") if components.vae is not None else "pixel"
    key = latents_key(vae_fp, sequence, resolution=resolution, channels=channels, precision=precision)
    path = cache_dir / f"latents-{key}.safetensors"
    if not dist.agree(not path.is_file()):  # encoded by every rank or by none: a lone rank would hang
        return load_file(path)["images"], rows[0::2], rows[1::2], True
    first: dict[str, tuple[str, int]] = {}
    for p in pairs:
        for name in (p.winner, p.loser):
            first.setdefault(by_name[name], (name, p.line))
    images = _encode_all_images(
        components,
        export,
        [first[d] for d in distinct],
        resolution=resolution,
        channels=channels,
        precision=precision,
        batch_size=batch_size,
        between=between,
        dist=dist,
    )
    if dist.is_main:
        _store(path, {"images": images})
    return images, rows[0::2], rows[1::2], False


def _cached_text(components, pairs, *, precision, batch_size, cache_dir, between, dist):
    """``(values, caption rows, was_cached)`` for the pairs' distinct captions."""
    captions, rows = _distinct([p.caption for p in pairs])
    key = text_key(components.fingerprint("text_encoders"), captions, precision=precision)
    path = cache_dir / f"text-{key}.safetensors"
    if not dist.agree(not path.is_file()):
        return load_file(path), rows, True
    values = _encode_all_captions(
        components, captions, precision=precision, batch_size=batch_size, between=between, dist=dist
    )
    if dist.is_main:
        _store(path, values)
    return values, rows, False


def cached_encodings(
    components: DiffusionComponents,
    export: ImageExport,
    pairs: Sequence[ImagePair],
    *,
    resolution: int | None = None,
    precision: str = "fp32",
    batch_size: int = 16,
    cache_dir: Path | None = None,
    between_batches: Callable[[], None] = lambda: None,
    dist: Dist | None = None,
) -> tuple[EncodedPairs, bool]:
    """The pairs' latents (or pixels) and caption embeddings, from the cache or encoded and stored;
    returns ``(encodings, was_cached)`` (True when neither the VAE nor a text encoder ran).
    ``resolution`` defaults to the model's; a pixel model's images have its UNet's ``in_channels``.
    With ``dist`` of more than one process, the ranks encode a share each unless every rank finds the
    cache, every rank gets the whole, and rank 0 stores it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not pairs:
        raise ValueError("no image pairs to encode")
    common = dict(precision=precision, batch_size=batch_size, between=between_batches, dist=dist or Dist())
    cache_dir = Path(cache_dir or default_cache_dir())
    images, winner, loser, hit = _cached_latents(
        components,
        export,
        pairs,
        resolution=resolution or components.resolution,
        cache_dir=cache_dir,
        **common,
    )
    encoded = EncodedPairs(images, winner, loser)
    if not components.text_encoders:
        return encoded, hit
    text, caption, text_hit = _cached_text(components, pairs, cache_dir=cache_dir, **common)
    encoded = EncodedPairs(images, winner, loser, text["hidden"], text.get("pooled"), caption)
    return encoded, hit and text_hit
