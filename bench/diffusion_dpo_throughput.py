"""Diffusion-DPO throughput: our recipe against the per-step work of diffusers' ``train_diffusion_dpo.py``.

Same small SD-structured model on both sides (``UNet2DConditionModel`` + ``AutoencoderKL`` + CLIP text
encoder, random weights, saved in diffusers layout and loaded through ``load_diffusion``), the same seeded
image pairs, fp32 on both (a bf16-autocast pair of runs separately), batch 4 pairs, LoRA rank 8 on
``to_q/to_k/to_v/to_out.0``, AdamW (fused on both), clip 1.0, constant lr.

* baseline — what the example does every step (its dataloader runs in the training process, as with its
  default ``--dataloader_num_workers 0``): decode both PNGs (Pillow), resize, random crop and flip,
  normalize; tokenize and text-encode the captions; VAE-encode both images (``latent_dist.sample()``);
  then the LoRA UNet forward over winners+losers with gradients, the same UNet with adapters disabled as
  the reference without gradients, the loss, backward, clip, AdamW.
* ours — the ``diffusion_dpo`` recipe on the runtime, after its one-time encode pass (reported apart).

Each side runs in its own child process (its own peak memory).  In that process the "necessary UNet
work" — reference forward, policy forward and backward on a batch of the same shape — is timed alone;
the report prints each side's pairs/s, that share of its step, and the ratio.  ``channels_last`` is run
separately (ours only) so the ratio stays like for like.  ``python bench/diffusion_dpo_throughput.py
[--resolution 128 --steps 12 --runs ours:fp32,baseline:fp32,...]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _engine_common import peak_rss_mb  # noqa: E402

BATCH, RANK, LR, BETA, PAIRS = 4, 8, 1e-5, 5000.0, 32
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
WARMUP = 2
DEFAULT_RUNS = "ours:fp32,baseline:fp32,ours:bf16,baseline:bf16,ours_channels_last:fp32"


def build_model(folder: Path, resolution: int) -> Path:
    """A small SD-1.x-structured model: 4-block VAE (scale 8, 4 latent channels), a 2-level
    cross-attention UNet, a 2-layer CLIP text encoder; saved through diffusers' own ``save_pretrained``."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from training.engine.diffusion.tiny import _save, tiny_clip_text_encoder, tiny_clip_tokenizer

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 64, 64, 64],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=resolution,
    )
    unet = UNet2DConditionModel(
        sample_size=resolution // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=8,
        cross_attention_dim=32,
    )
    tokenizer = tiny_clip_tokenizer()
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    parts = {
        "unet": unet,
        "vae": vae,
        "text_encoder": tiny_clip_text_encoder(tokenizer, seed=2),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }
    return _save(folder, "StableDiffusionPipeline", parts)


# --- the baseline: the example's per-step work -----------------------------------------------------------


def _example_transform(data: bytes, resolution: int, rng: random.Random):
    """Resize (bilinear) the short side, RandomCrop, RandomHorizontalFlip, ToTensor, Normalize([0.5],
    [0.5]) — torchvision's ops as the example composes them, with Pillow and torch."""
    import numpy as np
    import torch
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize(
        (max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BILINEAR
    )
    left = rng.randint(0, image.size[0] - resolution)
    top = rng.randint(0, image.size[1] - resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - 0.5) / 0.5


def run_baseline(model: Path, data: Path, precision: str, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from training.engine.diffusion.data import open_image_export, read_pairs
    from training.engine.diffusion.models import load_diffusion
    from training.engine.diffusion.weights import attach_lora

    comps = load_diffusion(model)
    unet, vae, text_encoder, tokenizer = comps.unet, comps.vae, comps.text_encoders[0], comps.tokenizers[0]
    scheduler = comps.noise_scheduler
    attach_lora(unet, rank=RANK, alpha=RANK, dropout=0.0, target_modules=TARGETS)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, fused=True)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    export = open_image_export(data)
    rows, _ = read_pairs(export, split="train")
    resolution = comps.resolution
    rng = random.Random(0)
    dtype = torch.bfloat16 if precision == "bf16" else None
    times = []
    for step in range(steps):
        tick = time.perf_counter()
        batch = [rows[(step * BATCH + i) % len(rows)] for i in range(BATCH)]
        pixels = torch.stack(
            [
                torch.cat(
                    [
                        _example_transform(export.read(n, line=p.line), resolution, rng)
                        for n in (p.winner, p.loser)
                    ]
                )
                for p in batch
            ]
        )
        ids = tokenizer(
            [p.caption for p in batch],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            feed = torch.cat(pixels.chunk(2, dim=1))
            with torch.no_grad():
                latents = vae.encode(feed).latent_dist.sample() * vae.config.scaling_factor
                hidden = text_encoder(ids)[0].repeat(2, 1, 1)
            noise = torch.randn_like(latents).chunk(2)[0].repeat(2, 1, 1, 1)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH,)).repeat(2)
            noisy = scheduler.add_noise(latents, noise, t)
            pred = unet(noisy, t, hidden).sample
            model_losses = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
            mw, ml = model_losses.chunk(2)
            unet.disable_adapters()
            with torch.no_grad():
                ref = unet(noisy, t, hidden).sample.detach()
                ref_losses = F.mse_loss(ref.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3])
                rw, rl = ref_losses.chunk(2)
            unet.enable_adapters()
        logits = (rw - rl) - (mw - ml)
        loss = -F.logsigmoid(BETA / 2 * logits).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - tick)
    return {
        "step_times": times,
        "components": comps,
        "latent_shape": tuple(latents.shape[1:]),
        "setup_s": 0.0,
    }


# --- ours --------------------------------------------------------------------------------------------------


def run_ours(model: Path, data: Path, precision: str, steps: int, work: Path, channels_last: bool) -> dict:
    import torch

    from training.engine.methods import config_from_dict
    from training.engine.recipes.diffusion_dpo import DiffusionDPORecipe
    from training.engine.runtime.loop import prepare, run

    config = config_from_dict(
        {
            "method": "diffusion_dpo",
            "model": f"local:{model}",
            "train_file": str(data),
            "output_dir": str(work / "out"),
            "encode_cache_dir": str(work / "cache"),
            "batch_size": BATCH,
            "learning_rate": LR,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "lora_r": RANK,
            "lora_alpha": float(RANK),
            "epochs": 100,
            "max_steps": steps,
            "precision": precision,
            "save_final": False,
            "sample_count": 1,
            "sample_steps": 1,
            "shuffle": False,
        }
    )
    tick = time.perf_counter()
    recipe = prepare(DiffusionDPORecipe(config), config)
    setup = time.perf_counter() - tick
    if channels_last:
        recipe.components.unet.to(memory_format=torch.channels_last)
    times = []

    class Clock:
        last = None

        def log(self, metrics, step):
            times.append(BATCH / metrics["throughput/pairs_per_s"])

    run(recipe, config, callbacks=[Clock()])
    return {
        "step_times": times,
        "components": recipe.components,
        "latent_shape": tuple(recipe.train_data.images.shape[1:]),
        "setup_s": setup,
    }


# --- the necessary UNet work, timed alone ---------------------------------------------------------


def unet_work_seconds(comps, latent_shape, precision: str, reps: int) -> float:
    """Median seconds of reference forward (adapters off, no grad) + policy forward + backward on a batch
    of ``2·BATCH`` latents, in this process, with the UNet as the run left it."""
    import statistics

    import torch

    unet = comps.unet
    dtype = torch.bfloat16 if precision == "bf16" else None
    noisy = torch.randn(2 * BATCH, *latent_shape)
    t = torch.randint(0, 1000, (BATCH,)).repeat(2)
    hidden = torch.randn(2 * BATCH, comps.tokenizers[0].model_max_length, unet.config.cross_attention_dim)
    out = []
    for _ in range(reps):
        tick = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            unet.disable_adapters()
            with torch.no_grad():
                unet(noisy, t, hidden)
            unet.enable_adapters()
            pred = unet(noisy, t, hidden).sample
        pred.float().square().mean().backward()
        out.append(time.perf_counter() - tick)
        unet.zero_grad(set_to_none=True)
    return statistics.median(out)


def child(side: str, precision: str, resolution: int, steps: int) -> dict:
    import statistics

    import torch

    from training.engine.diffusion.tiny import write_synthetic_pairs
    from training.engine.runtime.memory import retain_freed_memory

    retain_freed_memory()  # both sides: the allocator setting is not what this compares
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model(work / "model", resolution)
        data = write_synthetic_pairs(work / "pairs.zip", PAIRS, size=int(resolution * 1.25), seed=1)
        if side == "baseline":
            out = run_baseline(model, data, precision, steps)
        else:
            out = run_ours(model, data, precision, steps, work, channels_last=side == "ours_channels_last")
        step_s = statistics.median(out["step_times"][WARMUP:])
        unet_s = unet_work_seconds(out["components"], out["latent_shape"], precision, reps=max(3, steps // 2))
    return {
        "side": side,
        "precision": precision,
        "resolution": resolution,
        "step_s": step_s,
        "pairs_per_s": BATCH / step_s,
        "unet_work_s": unet_s,
        "unet_share": unet_s / step_s,
        "setup_s": out["setup_s"],
        "peak_rss_mb": peak_rss_mb(),
    }


def _spawn(side: str, precision: str, resolution: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{side}:{precision}", "--resolution", str(resolution)]
    cmd += ["--steps", str(steps)]
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "DIFFUSERS_VERBOSITY": "error",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side}:{precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(results: list[dict]) -> None:
    print(
        f"{'run':24} {'pairs/s':>8} {'step s':>8} {'UNet s':>8} {'UNet share':>10} {'setup s':>8} "
        f"{'peak MB':>8}"
    )
    for r in results:
        name = f"{r['side']}:{r['precision']}"
        print(
            f"{name:24} {r['pairs_per_s']:8.2f} {r['step_s']:8.3f} {r['unet_work_s']:8.3f} "
            f"{r['unet_share']:10.1%} {r['setup_s']:8.1f} {r['peak_rss_mb']:8.0f}"
        )
    by = {(r["side"], r["precision"]): r for r in results}
    for ours, base in (
        (("ours", "fp32"), ("baseline", "fp32")),
        (("ours", "bf16"), ("baseline", "bf16")),
        (("ours_channels_last", "fp32"), ("ours", "fp32")),
    ):
        if ours in by and base in by:
            ratio = by[ours]["pairs_per_s"] / by[base]["pairs_per_s"]
            print(f"speed ratio {ours[0]}:{ours[1]} / {base[0]}:{base[1]}: {ratio:.2f}x pairs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", default=DEFAULT_RUNS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, precision = args.child.split(":")
        print(json.dumps(child(side, precision, args.resolution, args.steps)))
        return
    threads = os.environ.get("BENCH_THREADS", "2")
    print(
        f"Diffusion-DPO throughput at {args.resolution}px (latents {args.resolution // 8}²×4): small "
        f"SD-structured model (random weights), {PAIRS} seeded pairs, batch {BATCH} pairs, LoRA r{RANK} on "
        f"{'/'.join(TARGETS)}, β {BETA:g} (½ convention on both), AdamW lr {LR} constant, clip 1.0, "
        f"{args.steps} steps (median after {WARMUP} warm-up), {threads} torch threads, fp32 unless marked "
        "bf16 (autocast on both); "
        "baseline = the per-step work of diffusers' train_diffusion_dpo.py; "
        "'UNet share' = reference forward + policy forward/backward timed alone ÷ the side's step"
    )
    results = []
    for spec in args.runs.split(","):
        side, precision = spec.split(":")
        results.append(_spawn(side, precision, args.resolution, args.steps))
        print(f"  done {spec}: {results[-1]['pairs_per_s']:.2f} pairs/s", flush=True)
    _report(results)


if __name__ == "__main__":
    main()
