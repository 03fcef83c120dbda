"""The embedded offline diffusion model: a caption-conditioned pixel model of scikit-learn's digits.

``bundled:digits`` names it (see ``models.resolve_folder``).  It needs nothing from outside the machine:
the 1,797 8×8 digits ship inside scikit-learn, the text side is a real ``CLIPTextModel`` and
``CLIPTokenizer`` (``tiny``'s character-level ones, the digit tokens' embeddings scaled up so the one
token that differs between captions stands out, then trained along with the UNet), and the whole model is
trained here, seeded and deterministic, in about a minute and a half on two CPU cores:

* ``digits_images`` — the digits as 1×16×16 images in [-1, 1], ink bright (+1) on a dark (−1) ground;
* ``caption_for`` — ``"a handwritten 3"``: the caption each image is trained under;
* ``train_digits_model`` — trains the UNet (DDPM cosine noise schedule, epsilon prediction under Min-SNR-1
  loss weights, 10 % empty captions so classifier-free guidance works) and saves a diffusers-layout
  folder that ``load_diffusion`` reads;
* ``ensure_digits_model`` — ``$MODEL_CACHE/digits-diffusion-v1``, trained once per cache under a file
  lock and renamed into place whole, so concurrent callers never see half a folder;
* ``digits_classifier``, ``classify_digits``, ``ink`` — a scikit-learn classifier and an ink measure that
  tests use to read what a sampled image shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm
from transformers import CLIPTextModel

from training.engine.diffusion.tiny import (
    TEXT_HIDDEN,
    _save,
    _seeded,
    tiny_clip_text_encoder,
    tiny_clip_tokenizer,
)

MODEL_NAME = "digits-diffusion-v1"
"""The folder name in the model cache; a change to the recipe below gets a new version."""
REPO_ROOT = Path(__file__).resolve().parents[3]
RESOLUTION = 16
TRAIN_STEPS = 300
"""Optimizer steps of a full training run (about 0.28 s each on two cores)."""
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
WARMUP_STEPS = 20
DIGIT_SCALE = 100.0
"""How much the digit tokens' input embeddings are scaled up (``digits_text_encoder``)."""
MIN_SNR_GAMMA = 1.0
"""γ of the Min-SNR loss weighting."""
CAPTION_DROPOUT = 0.1
"""Share of training images seen under the empty caption, the unconditional half of guidance."""


def model_cache_dir() -> Path:
    """Where bundled models live: ``$MODEL_CACHE``, else ``<repo>/var/models`` (as the causal-LM side's)."""
    return Path(os.environ.get("MODEL_CACHE", REPO_ROOT / "var" / "models"))


def digits_images(size: int = RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [1797, 1, size, size] float32 in [-1, 1], labels [1797] long)``: the 8×8 digits (0–16,
    ink high) scaled so ink is +1 and the ground −1, then upsampled bilinearly."""
    digits = load_digits()
    pixels = torch.from_numpy(digits.images).float().unsqueeze(1) / 8.0 - 1.0
    if size != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    return pixels.clamp(-1, 1).contiguous(), torch.from_numpy(digits.target).long()


def caption_for(label: int) -> str:
    """The caption a digit is trained and sampled under, e.g. ``"a handwritten 3"``."""
    return f"a handwritten {int(label)}"


def digits_unet(*, seed: int = 0) -> UNet2DConditionModel:
    """The 1×16×16 UNet, 16 → 8 → 4 pixels: the caption enters through cross-attention at 8×8 and 4×4
    and, pooled (``addition_embed_type="text"``), through the time embedding of every residual block."""
    config = dict(
        sample_size=RESOLUTION,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=TEXT_HIDDEN,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )
    return _seeded(seed, lambda: UNet2DConditionModel(**config))


def digits_text_encoder(tokenizer, *, seed: int = 0) -> CLIPTextModel:
    """The tiny random CLIP text encoder with the digit tokens' input embeddings scaled up ``DIGIT_SCALE``
    times, so the digit, one token in sixteen, dominates its position's output from the first step: the
    UNet then picks up the caption in a few hundred steps rather than thousands."""
    encoder = tiny_clip_text_encoder(tokenizer, seed=seed)
    digit_ids = tokenizer.convert_tokens_to_ids([f"{d}</w>" for d in range(10)])
    with torch.no_grad():
        encoder.get_input_embeddings().weight[digit_ids] *= DIGIT_SCALE
    return encoder


def digits_scheduler() -> DDPMScheduler:
    """The training noise schedule: 1000 cosine-schedule (``squaredcos_cap_v2``) steps, epsilon prediction."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon"
    )


@contextlib.contextmanager
def _reproducible(threads: int):
    """``threads`` torch threads and deterministic kernels for the block; both restored after it."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _caption_ids(tokenizer) -> torch.Tensor:
    """``[11, T]`` token ids: row ``d`` for ``caption_for(d)``, row 10 for the empty caption, padded as
    ``encode_captions`` pads them."""
    captions = [caption_for(d) for d in range(10)] + [""]
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights for epsilon prediction, ``min(SNR, γ) / SNR`` (Hang et al. 2023): the nearly
    clean timesteps, where the caption matters least, stop dominating the loss."""
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return snr.clamp(max=gamma) / snr


def _learning_rate(step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < WARMUP_STEPS:
        return LEARNING_RATE * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS)
    return LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * progress))


def train_digits_model(
    folder: Path,
    *,
    seed: int = 0,
    progress: bool = False,
    steps: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train the digits model and save it at ``folder`` (diffusers layout: ``unet/ text_encoder/
    tokenizer/ scheduler/ model_index.json``); returns ``folder``.  The same ``seed``, ``steps`` and
    ``threads`` give the same weights.  ``threads`` defaults to ``torch.get_num_threads()``."""
    steps = TRAIN_STEPS if steps is None else steps
    tokenizer = tiny_clip_tokenizer()
    text_encoder = digits_text_encoder(tokenizer, seed=seed + 2)
    unet = digits_unet(seed=seed)
    scheduler = digits_scheduler()
    images, labels = digits_images()
    with _reproducible(threads or torch.get_num_threads()):
        caption_ids = _caption_ids(tokenizer)
        generator = torch.Generator().manual_seed(seed)
        parameters = [*unet.parameters(), *text_encoder.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=0.0, foreach=True)
        unet.train()
        text_encoder.train()
        bar = tqdm(total=steps, desc="training the embedded digits model", unit="step", disable=not progress)
        for step in range(steps):
            rows = torch.randint(0, len(images), (BATCH_SIZE,), generator=generator)
            dropped = torch.rand(BATCH_SIZE, generator=generator) < CAPTION_DROPOUT
            caption_rows = torch.where(dropped, torch.full_like(rows, 10), labels[rows])
            noise = torch.randn((BATCH_SIZE, *images.shape[1:]), generator=generator)
            timesteps = torch.randint(
                0, scheduler.config.num_train_timesteps, (BATCH_SIZE,), generator=generator
            )
            noisy = scheduler.add_noise(images[rows], noise, timesteps)
            table = text_encoder(caption_ids)[0]
            # a one-hot product, not table[rows]: indexing's backward accumulates in thread order
            states = torch.einsum("bc,ctd->btd", F.one_hot(caption_rows, len(table)).float(), table)
            pred = unet(noisy, timesteps, encoder_hidden_states=states).sample
            per_image = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
            loss = (min_snr_weights(scheduler, timesteps, gamma=MIN_SNR_GAMMA) * per_image).mean()
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        bar.close()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    components = {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
    return _save(Path(folder), "PixelDiffusionPipeline", components)


def ensure_digits_model(*, progress: bool = False) -> Path:
    """``<model cache>/digits-diffusion-v1``, trained first if absent.  Training writes into a private
    folder beside it that is renamed into place whole, under an ``flock`` on ``digits-diffusion-v1.lock``:
    a second process waits for the first and then finds the folder there."""
    cache = model_cache_dir()
    target = cache / MODEL_NAME
    if (target / "model_index.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "model_index.json").is_file():
            return target
        if target.exists():  # not ours to keep: a folder left without its index
            shutil.rmtree(target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.", dir=cache))
        try:
            train_digits_model(scratch / "model", progress=progress)
            os.rename(scratch / "model", target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


@functools.cache
def digits_classifier() -> LogisticRegression:
    """A logistic regression on the flattened 16×16 training digits (trained once per process)."""
    images, labels = digits_images()
    classifier = LogisticRegression(max_iter=2000)
    return classifier.fit(images.flatten(1).numpy(), labels.numpy())


def classify_digits(images: torch.Tensor) -> np.ndarray:
    """The digit each ``[N, 1, 16, 16]`` image in [-1, 1] shows, by ``digits_classifier``."""
    features = images.detach().float().cpu().clamp(-1, 1).flatten(1).numpy()
    return digits_classifier().predict(features)


def ink(images: torch.Tensor) -> torch.Tensor:
    """``[N]`` the share of ink in each image: its mean pixel mapped from [-1, 1] to [0, 1]."""
    return (images.detach().float().clamp(-1, 1).mean(dim=(1, 2, 3)) + 1) / 2
