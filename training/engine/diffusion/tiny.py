"""Tiny random diffusion models of the real classes, saved in diffusers layout, for tests and benches.

Every builder is seeded (the same arguments give the same weights) and offline: the CLIP tokenizer is built
from a character-level vocabulary written here, so nothing is downloaded. The folders go through the same
``from_pretrained`` path as a user's Stable Diffusion folder:

* ``save_tiny_sd(path)`` — SD 1.x/2.x layout: ``unet/ vae/ text_encoder/ tokenizer/ scheduler/``,
  32×32 images, 8×8×4 latents;
* ``save_tiny_sdxl(path)`` — SDXL layout: adds ``text_encoder_2/`` (with projection) and ``tokenizer_2/``,
  and the UNet takes the ``text_time`` added conditions;
* ``save_tiny_pixel(path)`` — pixel space, no VAE: a caption-conditioned ``UNet2DConditionModel`` (or an
  unconditional ``UNet2DModel``) on 1×16×16 images with a DDPM scheduler.

``write_synthetic_pairs(path, n)`` writes an image-pair export (the zip layout of
``diffusion/data.py``) of random seeded pictures whose winner is always the brighter image.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import string
import zipfile
from collections.abc import Callable
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_HIDDEN = 32
"""Hidden size of each tiny CLIP text encoder (SDXL's cross-attention width is two of them)."""
MAX_TOKENS = 16
"""Token length of the tiny tokenizers and text encoders (77 in real CLIP)."""
CHARS = string.ascii_lowercase + string.digits + ".,!?'-"
MERGES = ["t h", "th e</w>", "i n", "a n", "an d</w>"]


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build().float()
    finally:
        torch.random.set_rng_state(state)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over lowercase letters, digits and a little punctuation (unknown characters
    map to ``<|endoftext|>``), padded to ``MAX_TOKENS`` like SD's tokenizer pads to 77."""
    tokens = ["<|startoftext|>", "<|endoftext|>", *CHARS, *(c + "</w>" for c in CHARS)]
    tokens += [m.replace(" ", "") for m in MERGES]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in MERGES])
    tok.model_max_length = MAX_TOKENS
    return tok


def tiny_clip_text_encoder(
    tokenizer: CLIPTokenizer, *, projection: bool = False, seed: int = 0
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A 2-layer CLIP text encoder of width ``TEXT_HIDDEN``; with ``projection`` the SDXL second encoder
    (``CLIPTextModelWithProjection``, whose ``text_embeds`` are the pooled prompt embedding)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _seeded(seed, lambda: cls(config))


def tiny_vae(*, seed: int = 0) -> AutoencoderKL:
    """A 3-block ``AutoencoderKL``: 3×32×32 images ↔ 4×8×8 latents (scale factor 4)."""
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[8, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    return _seeded(seed, lambda: AutoencoderKL(**config))


def tiny_unet(
    *,
    sample_size: int = 8,
    channels: int = 4,
    cross_attention_dim: int = TEXT_HIDDEN,
    sdxl: bool = False,
    seed: int = 0,
) -> UNet2DConditionModel:
    """A 2-block cross-attention UNet; with ``sdxl`` it takes the ``text_time`` added conditions
    (``text_embeds`` of width ``TEXT_HIDDEN`` and six ``time_ids``) like SDXL's."""
    extra = {}
    if sdxl:
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=TEXT_HIDDEN + 6 * 8,
            use_linear_projection=True,
        )
    config = dict(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=cross_attention_dim,
        **extra,
    )
    return _seeded(seed, lambda: UNet2DConditionModel(**config))


def tiny_pixel_unet(*, sample_size: int = 16, channels: int = 1, seed: int = 0) -> UNet2DModel:
    """An unconditional 2-block ``UNet2DModel`` on ``channels``×``sample_size``² pixels."""
    config = dict(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
    )
    return _seeded(seed, lambda: UNet2DModel(**config))


def _latent_scheduler() -> DDIMScheduler:
    """SD's noise schedule (scaled-linear betas 0.00085…0.012 over 1000 steps)."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _save(path: Path, pipeline: str, components: dict) -> Path:
    """Each component saved into its subfolder, plus the ``model_index.json`` diffusers writes."""
    path = Path(path)
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__}
    for name, component in components.items():
        component.save_pretrained(path / name)
        library = "diffusers" if type(component).__module__.startswith("diffusers") else "transformers"
        index[name] = [library, type(component).__name__]
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return path


def save_tiny_sd(path: Path, *, seed: int = 0) -> Path:
    """A tiny Stable Diffusion 1.x-layout folder at ``path`` (created); returns ``path``."""
    tokenizer = tiny_clip_tokenizer()
    components = {
        "unet": tiny_unet(seed=seed),
        "vae": tiny_vae(seed=seed + 1),
        "text_encoder": tiny_clip_text_encoder(tokenizer, seed=seed + 2),
        "tokenizer": tokenizer,
        "scheduler": _latent_scheduler(),
    }
    return _save(path, "StableDiffusionPipeline", components)


def save_tiny_sdxl(path: Path, *, seed: int = 0) -> Path:
    """A tiny SDXL-layout folder at ``path``: two text encoders whose penultimate hidden states are
    concatenated (cross-attention width ``2·TEXT_HIDDEN``) and the ``text_time`` added conditions."""
    tokenizer = tiny_clip_tokenizer()
    components = {
        "unet": tiny_unet(cross_attention_dim=2 * TEXT_HIDDEN, sdxl=True, seed=seed),
        "vae": tiny_vae(seed=seed + 1),
        "text_encoder": tiny_clip_text_encoder(tokenizer, seed=seed + 2),
        "text_encoder_2": tiny_clip_text_encoder(tokenizer, projection=True, seed=seed + 3),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": _latent_scheduler(),
    }
    return _save(path, "StableDiffusionXLPipeline", components)


def save_tiny_pixel(path: Path, *, conditional: bool = True, seed: int = 0) -> Path:
    """A tiny pixel-space folder (no VAE) on 1×16×16 images with a DDPM scheduler: caption-conditioned
    (``UNet2DConditionModel`` + CLIP text encoder and tokenizer) or, without ``conditional``, a
    ``UNet2DModel`` alone."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    if not conditional:
        return _save(path, "DDPMPipeline", {"unet": tiny_pixel_unet(seed=seed), "scheduler": scheduler})
    tokenizer = tiny_clip_tokenizer()
    components = {
        "unet": tiny_unet(sample_size=16, channels=1, seed=seed),
        "text_encoder": tiny_clip_text_encoder(tokenizer, seed=seed + 2),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }
    return _save(path, "PixelDiffusionPipeline", components)


SYNTHETIC_CAPTIONS = ("a red cat", "a blue sky", "the sun", "a green tree", "a small dog", "the sea")


def _picture(rng: random.Random, size: int, brightness: float) -> bytes:
    """A seeded noisy PNG whose mean brightness is about ``brightness`` (0…1)."""
    pixels = bytes(max(0, min(255, int(255 * brightness + rng.gauss(0, 40)))) for _ in range(size * size * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), pixels).save(out, format="PNG")
    return out.getvalue()


def write_synthetic_pairs(
    path: Path, n: int, *, n_test: int = 0, size: int = 32, seed: int = 0, ties: int = 0
) -> Path:
    """An export zip of ``n`` training and ``n_test`` held-out pairs (plus ``ties`` tied training pairs):
    each pair's brighter picture wins, on either side (``label_0`` 1 or 0 at random)."""
    rng = random.Random(seed)
    rows, images = [], {}
    for i in range(n + n_test + ties):
        bright = _picture(rng, size, rng.uniform(0.6, 0.9))
        dark = _picture(rng, size, rng.uniform(0.1, 0.4))
        names = []
        for data in (bright, dark):
            name = f"images/{hashlib.sha256(data).hexdigest()}.png"
            images[name] = data
            names.append(name)
        bright_first = rng.random() < 0.5
        label = 1.0 if bright_first else 0.0
        if not bright_first:
            names.reverse()
        split = "test" if n <= i < n + n_test else "train"
        if i >= n + n_test:
            label = 0.5
        caption = SYNTHETIC_CAPTIONS[i % len(SYNTHETIC_CAPTIONS)]
        rows.append(
            {"caption": caption, "jpg_0": names[0], "jpg_1": names[1], "label_0": label, "split": split}
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        for name, data in images.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    return path
