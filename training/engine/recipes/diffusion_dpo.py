"""The ``diffusion_dpo`` recipe: Diffusion-DPO (Wallace et al., 2023) on a diffusers model, on the runtime.

Set-up loads the model (``diffusion/models.py``), reads the image-pair export and takes every image's VAE
latent (or pixels) and every caption's text embedding from the encode cache (``diffusion/encode_cache.py``),
so no training step runs the VAE or a text encoder.  Each micro-batch draws one timestep and one noise per
pair (the runtime's seeded RNG, so resume is exact), shared by winner and loser, runs the reference (the
UNet with its LoRA adapters disabled, or a frozen copy under full fine-tuning) without gradients and the
trained UNet with them over the stacked ``[winners, losers]``, and back-propagates the objective of
``objectives/diffusion.py``.

At every evaluation (and before the first step) the recipe draws a fixed set of samples: the same captions
and seeds each time (``diffusion/sample.py``), so the job page shows the images change as it trains.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from training.engine.diffusion.conditioning import TextConditioning, encode_captions, unet_conditioning
from training.engine.diffusion.data import ImagePair, open_image_export, read_pairs
from training.engine.diffusion.encode_cache import EncodedPairs, cached_encodings
from training.engine.diffusion.models import DiffusionComponents, load_diffusion, resolve_folder
from training.engine.diffusion.sample import png_bytes, sample_images, to_pil
from training.engine.diffusion.weights import (
    LORA_FILE,
    attach_lora,
    export_model_folder,
    load_lora,
    load_unet_weights,
    merge_lora,
    save_lora,
    save_unet,
)
from training.engine.objectives.diffusion import (
    LOSS_TYPES,
    PairErrors,
    diffusion_dpo,
    diffusion_dpo_loss,
    diffusion_pair_metrics,
    pair_errors,
    prediction_target,
)
from training.engine.runtime.config import (
    RunConfig,
    require,
    require_at_most,
    require_fraction,
    require_positive,
)
from training.engine.runtime.device import autocast
from training.engine.runtime.memory import own_trainable_weights
from training.engine.runtime.optim import step_count, step_plan
from training.engine.runtime.recipe import MicroStep, RecipeBase, Stage

IMAGE_PAIR_KINDS = ("image_pair",)
MAX_SAMPLES = 16
"""The most images in an evaluation's sample grid."""
EVAL_SEED_OFFSET = 7919
"""Evaluation draws its timesteps and noise from ``seed + this`` (its own generator, the same every eval)."""


@dataclass(frozen=True, kw_only=True)
class DiffusionDPOConfig(RunConfig):
    """Diffusion-DPO on a diffusers model (SD 1.x/2.x, SDXL or a pixel-space model) from judged image
    pairs.  β uses the paper's ½ convention: the loss is −log σ(−(β/2)·[(e_w − e_w_ref) − (e_l − e_l_ref)]),
    so β 5000 here is the diffusers example's ``--beta_dpo 2500``."""

    method: ClassVar[str] = "diffusion_dpo"

    model: str
    """Diffusion model: ``bundled:digits`` (the embedded offline model), ``local:PATH`` (a folder in
    diffusers layout) or ``hub:ORG/NAME``."""
    train_file: str
    """Image-pair export (zip, folder or ``data.jsonl``, Pick-a-Pic columns); ``split`` = test held out."""
    learning_rate: float = 1e-5
    """AdamW peak learning rate (the paper's full fine-tuning of SD 1.5 used 1e-8 at batch 2048)."""
    batch_size: int = 4
    """Pairs per micro-batch (each pair is two UNet inputs)."""
    beta: float = 5000.0
    """β of the implicit reward, with the ½ convention (diffusers' ``beta_dpo`` = β/2)."""
    loss_type: str = "sigmoid"
    """sigmoid (Diffusion-DPO), ipo (squared loss toward the margin 1/β) or sft (denoising loss on
    winners only: the baseline)."""
    sft_weight: float = 0.0
    """α of an added winner denoising term α·e_w (sigmoid and ipo only; 0 = off)."""
    keep_ties: bool = False
    """Keep tied pairs (label 0.5), ordered jpg_0 first; by default they are dropped and counted."""
    lora: bool = True
    """Train a LoRA adapter on the UNet (reference = adapters disabled) instead of the whole UNet (with a
    frozen copy as the reference)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: float = 8.0
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet module names that receive adapters (the attention projections, as the diffusers example)."""
    resolution: int | None = None
    """Image side the pairs are resized and center-cropped to; None = the model's own."""
    encode_cache_dir: str | None = None
    """Where latents and caption embeddings are cached; None = $ENCODE_CACHE or <repo>/var/encode_cache."""
    sample_captions: tuple[str, ...] = ()
    """Captions of the sample grid drawn at each evaluation; empty = the first distinct held-out (then
    training) captions, up to ``sample_count``."""
    sample_count: int = 4
    """Images in the sample grid (captions cycle when fewer than this)."""
    sample_seed: int = 0
    """Seed of the grid's first image (image i uses seed + i): the same at every evaluation."""
    sample_steps: int = 20
    """DDIM steps per sample."""
    guidance_scale: float = 3.0
    """Classifier-free guidance of the samples (1 = none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self.beta, "beta")
        require(self.loss_type in LOSS_TYPES, "loss_type", f"one of {', '.join(LOSS_TYPES)}")
        require(
            isinstance(self.sft_weight, int | float) and 0 <= self.sft_weight < float("inf"),
            "sft_weight",
            f"must be a number ≥ 0, got {self.sft_weight!r}",
        )
        require(
            not (self.loss_type == "sft" and self.sft_weight),
            "sft_weight",
            "loss type sft is the winner denoising loss already; leave sft_weight at 0",
        )
        require_positive(self.lora_r, "lora_r", integer=True)
        require_positive(self.lora_alpha, "lora_alpha")
        require_fraction(self.lora_dropout, "lora_dropout")
        require(bool(self.lora_target_modules), "lora_target_modules", "name at least one module")
        require_positive(self.resolution, "resolution", integer=True, allow_none=True)
        require_at_most(self.resolution, "resolution", 4096)
        require_positive(self.sample_count, "sample_count", integer=True)
        require_at_most(self.sample_count, "sample_count", MAX_SAMPLES)
        require_positive(self.sample_steps, "sample_steps", integer=True)
        require_at_most(self.sample_steps, "sample_steps", 1000)
        require_positive(self.guidance_scale, "guidance_scale")
        require(
            isinstance(self.sample_seed, int) and 0 <= self.sample_seed < 2**31,
            "sample_seed",
            f"must be a whole number from 0 to {2**31 - 1}, got {self.sample_seed!r}",
        )
        for i, caption in enumerate(self.sample_captions):
            require(isinstance(caption, str) and caption.strip() != "", f"sample_captions[{i}]", "empty")


class DiffusionDPORecipe(RecipeBase):
    """Diffusion-DPO, its IPO branch and the winner-SFT baseline on one diffusers UNet."""

    unit: ClassVar[str] = "pairs"
    accepts: ClassVar[tuple[str, ...]] = IMAGE_PAIR_KINDS
    model_kind: ClassVar[str] = "diffusion"
    writes_samples: ClassVar[bool] = True
    supports_distributed: ClassVar[bool] = True

    def __init__(self, config: DiffusionDPOConfig, *, components: DiffusionComponents | None = None) -> None:
        self.config = config
        self.components = components
        self.reference_unet: torch.nn.Module | None = None

    @classmethod
    def planned_steps(cls, config: DiffusionDPOConfig, n_train_rows: int) -> int:
        return step_count(n_train_rows, config)

    # --- setup -----------------------------------------------------------------------------------------

    def setup(self, device: torch.device) -> None:
        config = self.config
        self.device = device
        comps = self.components if self.components is not None else load_diffusion(config.model)
        for module in (comps.unet, comps.vae, *comps.text_encoders):
            if module is not None:
                module.to(device)
        self.components = comps
        self.autocast = torch.bfloat16 if config.precision == "bf16" else None
        self.train_pairs, self.eval_pairs, self.dropped = self._read_pairs()
        self.train_data, train_hit = self._encode(self.train_pairs)
        self.eval_data, eval_hit = self._encode(self.eval_pairs) if self.eval_pairs else (None, True)
        self.encodings_cached = train_hit and eval_hit
        self._prepare_samples()
        unet = comps.unet
        if config.lora:
            self._attach_lora(unet)
        else:
            self.reference_unet = copy.deepcopy(unet).requires_grad_(False).eval()
            unet.requires_grad_(True)
            own_trainable_weights(unet)
        unet.train()

    def _attach_lora(self, unet: torch.nn.Module) -> None:
        config = self.config
        attach_lora(
            unet,
            rank=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
        )

    def _read_pairs(self) -> tuple[list[ImagePair], list[ImagePair], dict[str, int]]:
        config = self.config
        with open_image_export(config.train_file) as export:
            train, report = read_pairs(export, split="train", keep_ties=config.keep_ties)
            if not config.eval_file:
                held_out, eval_report = read_pairs(export, split="test", keep_ties=config.keep_ties)
        if config.eval_file:
            with open_image_export(config.eval_file) as export:
                held_out, eval_report = read_pairs(export, keep_ties=config.keep_ties)
        if not train:
            raise ValueError(f"{config.train_file}: no training pair left ({dict(report.dropped)})")
        dropped = {f"train/{k}": v for k, v in report.dropped.items()}
        dropped.update({f"eval/{k}": v for k, v in eval_report.dropped.items()})
        return train, held_out, dropped

    def _encode(self, pairs: list[ImagePair]) -> tuple[EncodedPairs, bool]:
        config = self.config
        source = config.eval_file if pairs is self.eval_pairs and config.eval_file else config.train_file
        with open_image_export(source) as export:
            return cached_encodings(
                self.components,
                export,
                pairs,
                resolution=config.resolution,
                precision=config.precision,
                batch_size=max(config.batch_size, 8),
                cache_dir=Path(config.encode_cache_dir) if config.encode_cache_dir else None,
                between_batches=self.between_batches,
                dist=self.dist,
            )

    def _prepare_samples(self) -> None:
        """The grid's captions and seeds, and their text embeddings (encoded once, here)."""
        config, comps = self.config, self.components
        captions = list(config.sample_captions)
        if not captions and comps.conditioned:
            seen = dict.fromkeys(p.caption for p in [*self.eval_pairs, *self.train_pairs])
            captions = list(seen)[: config.sample_count]
        n = config.sample_count
        self.sample_captions = [captions[i % len(captions)] for i in range(n)] if captions else []
        self.sample_seeds = [config.sample_seed + i for i in range(n)]
        self.sample_text = self.sample_negative = None
        if comps.conditioned:
            self.sample_text = encode_captions(comps, self.sample_captions)
            self.sample_negative = encode_captions(comps, [""])

    # --- the runtime's calls -----------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.components.unet.parameters() if p.requires_grad]}]

    def stages(self) -> list[Stage]:
        return [Stage(step_plan(len(self.train_pairs), self.config), len(self.train_pairs))]

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        idx = torch.tensor(positions)
        n = len(positions)
        whole = len(self.micro_batch) or n  # drawn for the whole micro-batch, on every rank alike
        noise = torch.randn((whole, *self.train_data.images.shape[1:]))
        timesteps = torch.randint(0, self.components.noise_scheduler.config.num_train_timesteps, (whole,))
        share = self.dist.share_of(whole)
        if share.stop - share.start != n:  # an empty share: the runtime runs one example at scale 0
            share = slice(0, n)
        errors = self._errors(self.train_data, idx, noise[share], timesteps[share], grad=True)
        loss, metrics = diffusion_dpo(
            errors, beta=self.config.beta, loss_type=self.config.loss_type, sft_weight=self.config.sft_weight
        )
        (loss * scale).backward()
        return MicroStep(metrics, n)

    def _errors(
        self,
        data: EncodedPairs,
        idx: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        grad: bool,
    ) -> PairErrors:
        """Model and reference errors for the pairs at ``idx``, each pair's one noise and timestep shared
        by its winner and loser."""
        comps, device = self.components, self.device
        scheduler = comps.noise_scheduler
        winners, losers, text = data.batch(idx)
        latents = torch.cat([winners, losers]).to(device)
        noise = torch.cat([noise, noise]).to(device)
        timesteps = torch.cat([timesteps, timesteps]).to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = prediction_target(
            scheduler.config.prediction_type,
            latents=latents,
            noise=noise,
            timesteps=timesteps,
            get_velocity=scheduler.get_velocity,
        )
        if text is not None:
            pooled = None if text.pooled is None else torch.cat([text.pooled, text.pooled]).to(device)
            text = TextConditioning(torch.cat([text.hidden, text.hidden]).to(device), pooled)
        cond = unet_conditioning(comps, text)
        with torch.no_grad(), autocast(device, self.autocast):
            ref_pred = self._reference(noisy, timesteps, cond)
        with torch.set_grad_enabled(grad), autocast(device, self.autocast):
            model_pred = comps.unet(noisy, timesteps, **cond).sample
        return pair_errors(model_pred=model_pred, ref_pred=ref_pred, target=target)

    def _reference(self, noisy, timesteps, cond) -> torch.Tensor:
        if self.reference_unet is not None:
            return self.reference_unet(noisy, timesteps, **cond).sample
        unet = self.components.unet
        unet.disable_adapters()
        try:
            return unet(noisy, timesteps, **cond).sample
        finally:
            unet.enable_adapters()

    def evaluate(self) -> dict[str, float]:
        """``eval/…`` metrics over every held-out pair, with the same timesteps and noise at every
        evaluation (a generator of their own), so successive evaluations compare like for like."""
        if self.eval_data is None:
            return {}
        unet = self.components.unet
        was_training = unet.training
        unet.eval()
        generator = torch.Generator().manual_seed(self.config.seed + EVAL_SEED_OFFSET)
        n_steps = self.components.noise_scheduler.config.num_train_timesteps
        parts: list[PairErrors] = []
        shape = self.eval_data.images.shape[1:]
        for start in range(0, len(self.eval_data), self.config.batch_size):
            self.between_batches()
            idx = torch.arange(start, min(start + self.config.batch_size, len(self.eval_data)))
            noise = torch.randn((len(idx), *shape), generator=generator)
            timesteps = torch.randint(0, n_steps, (len(idx),), generator=generator)
            parts.append(self._errors(self.eval_data, idx, noise, timesteps, grad=False))
        unet.train(was_training)
        errors = PairErrors(*(torch.cat([getattr(p, f) for p in parts]) for f in PairErrors._fields))
        out = diffusion_dpo_loss(
            errors, beta=self.config.beta, loss_type=self.config.loss_type, sft_weight=self.config.sft_weight
        )
        metrics = diffusion_pair_metrics(out, errors, out.losses.mean())
        return {f"eval/{k}": v for k, v in metrics.items()}

    def write_samples(self, folder: Path) -> None:
        """The grid's images as ``sample-<i>.png`` and ``samples.json`` (caption, seed, file of each) in
        ``folder``; drawn by the trained UNet (adapters on), the run's RNG untouched."""
        unet = self.components.unet
        was_training = unet.training
        unet.eval()
        config = self.config
        try:
            images = sample_images(
                self.components,
                seeds=self.sample_seeds,
                text=self.sample_text,
                negative=self.sample_negative,
                steps=config.sample_steps,
                guidance_scale=config.guidance_scale,
                batch_size=max(config.batch_size, 8),
                autocast_dtype=self.autocast,
                between_batches=self.between_batches,
            )
        finally:
            unet.train(was_training)
        entries = []
        for i, image in enumerate(to_pil(images)):
            name = f"sample-{i}.png"
            (folder / name).write_bytes(png_bytes(image))
            caption = self.sample_captions[i] if self.sample_captions else ""
            entries.append({"file": name, "caption": caption, "seed": self.sample_seeds[i]})
        settings = {"steps": config.sample_steps, "guidance_scale": config.guidance_scale}
        (folder / "samples.json").write_text(json.dumps({"samples": entries, **settings}, indent=1) + "\n")

    def save(self, folder: Path) -> None:
        if self.config.lora:
            save_lora(self.components.unet, folder)
        else:
            save_unet(self.components.unet, folder)

    def load(self, folder: Path) -> None:
        if self.config.lora:
            load_lora(self.components.unet, folder)
        else:
            load_unet_weights(self.components.unet, folder)

    def export_final(self, checkpoint: Path, folder: Path) -> None:
        """A complete model folder (``load_diffusion`` and the diffusers pipelines load it like the base):
        the base's other parts and the trained UNet; a LoRA run's adapter is merged into that UNet, and its
        ``pytorch_lora_weights.safetensors`` kept beside it for ``pipeline.load_lora_weights``."""
        base_folder = resolve_folder(self.config.model)
        unet = copy.deepcopy(self.components.unet).cpu()  # the set-up UNet (adapter attached): no reload
        if self.config.lora:
            load_lora(unet, checkpoint)
            merge_lora(unet)
            (folder / LORA_FILE).write_bytes((checkpoint / LORA_FILE).read_bytes())
        else:
            load_unet_weights(unet, checkpoint)
        export_model_folder(base_folder, unet, folder)

    def report(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "encodings_were_cached": self.encodings_cached}
