"""Load a diffusers model folder: Stable Diffusion 1.x/2.x, SDXL, or a pixel-space model without a VAE.

Spec format (a plain string, stored as-is in configs):

* ``local:/some/folder`` or any existing path — a folder in diffusers layout: ``model_index.json``,
  ``unet/``, ``scheduler/``, and for latent models ``vae/``, ``text_encoder/``, ``tokenizer/``
  (SDXL adds ``text_encoder_2/`` and ``tokenizer_2/``); a pixel-space model has no ``vae/`` and its text
  encoder and tokenizer are optional;
* ``hub:org/name`` — a hub id, read from the Hugging Face cache, or downloaded where the machine is online;
* ``bundled:digits`` (or ``bundled:digits-diffusion-v1``) — the embedded offline model: a small
  caption-conditioned pixel model of scikit-learn's 16×16 digits (``"a handwritten 3"``), trained once into
  the model cache on first use (``digits.ensure_digits_model``).

Everything that keeps a model from loading is a ``ConfigError`` naming the spec and what is missing, so
the launch form can show it next to the base-model field.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, DDPMScheduler
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from training.engine.runtime.config import ConfigError
from training.engine.runtime.hub import hub_reachable

KINDS = ("sd", "sdxl", "pixel")
REQUIRED = {
    "sd": ("unet", "scheduler", "vae", "text_encoder", "tokenizer"),
    "sdxl": ("unet", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
    "pixel": ("unet", "scheduler"),
}
DEFAULT_CLASSES = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "tokenizer_2": ("transformers", "CLIPTokenizer"),
}
BUNDLED = ("digits", "digits-diffusion-v1")
"""The names ``bundled:NAME`` accepts; all of them are the embedded digits model."""
HUB_IGNORE = ["*.ckpt", "*.msgpack", "*.onnx", "*.onnx_data", "*.pb", "*.h5", "*.ot", "*.mlmodel*"]
"""Weight formats no diffusers loader here reads (Flax, ONNX, TF, Core ML): never downloaded."""


@dataclass(eq=False)
class DiffusionComponents:
    """The parts of a diffusion model that training and sampling use, loaded in eval mode on the CPU."""

    kind: str
    """``sd`` (SD 1.x/2.x), ``sdxl`` (two text encoders, ``text_time`` added conditions) or ``pixel``."""
    unet: torch.nn.Module
    """``UNet2DConditionModel`` (or, for an unconditional pixel model, ``UNet2DModel``)."""
    noise_scheduler: DDPMScheduler
    """The training noise schedule: a ``DDPMScheduler`` built from the folder's scheduler config, so
    ``prediction_type`` (epsilon or v) and the betas are the model's."""
    scheduler_config: dict
    """The folder's own scheduler config (``_class_name`` included), for sampling."""
    vae: AutoencoderKL | None = None
    """The latent autoencoder; ``None`` for a pixel-space model."""
    text_encoders: tuple[torch.nn.Module, ...] = ()
    """``(text_encoder,)`` or, for SDXL, ``(text_encoder, text_encoder_2)``; empty when unconditioned."""
    tokenizers: tuple = ()
    """One tokenizer per text encoder."""
    source: str = ""
    """The spec or folder it was loaded from."""

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side (8 for SD/SDXL); 1 for a pixel-space model."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The image side the model was trained at: the UNet's ``sample_size`` times the VAE factor."""
        size = self.unet.config.sample_size
        return (size if isinstance(size, int) else size[0]) * self.vae_scale_factor

    @property
    def conditioned(self) -> bool:
        """Whether the UNet takes text (cross-attention) conditioning."""
        return bool(self.text_encoders)

    def fingerprint(self, *parts: str) -> str:
        """A sha256 over the weights of ``parts`` (default all of ``unet``, ``vae``, ``text_encoders``) and
        the tokenizers' vocabularies: equal only for identical models. Caches key on the parts they
        depend on, e.g. ``fingerprint("vae")`` for latents, ``fingerprint("text_encoders")`` for text."""
        digest = hashlib.sha256(b"v1")
        for part in parts or ("unet", "vae", "text_encoders"):
            modules = {"unet": (self.unet,), "vae": (self.vae,), "text_encoders": self.text_encoders}[part]
            for i, module in enumerate(modules):
                digest.update(f"|{part}{i}|".encode())
                if module is not None:
                    _hash_weights(digest, module)
            if part == "text_encoders":
                for tok in self.tokenizers:
                    digest.update(json.dumps(sorted(tok.get_vocab().items())).encode())
        return digest.hexdigest()


def _hash_weights(digest, module: torch.nn.Module) -> None:
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def load_diffusion(spec: str | Path, *, dtype: torch.dtype = torch.float32) -> DiffusionComponents:
    """Load the model ``spec`` names (see the module docstring) with weights in ``dtype``."""
    folder = resolve_folder(str(spec))
    index = _model_index(folder, str(spec))
    kind = detect_kind(folder, index)
    missing = [name for name in REQUIRED[kind] if not (folder / name).is_dir()]
    if kind == "pixel" and (folder / "text_encoder").is_dir() != (folder / "tokenizer").is_dir():
        missing.append("tokenizer" if (folder / "text_encoder").is_dir() else "text_encoder")
    if missing:
        raise ConfigError(
            f"diffusion model {spec}: {folder} lacks {', '.join(f'{m}/' for m in missing)} "
            f"(a {kind} model in diffusers layout needs {', '.join(f'{m}/' for m in REQUIRED[kind])})"
        )
    names = ["text_encoder", "text_encoder_2"] if kind == "sdxl" else ["text_encoder"]
    names = [n for n in names if (folder / n).is_dir()]
    load = lambda name: _load_component(folder, index, name, dtype)  # noqa: E731
    scheduler_config = _scheduler_config(folder, str(spec))
    return DiffusionComponents(
        kind=kind,
        unet=load("unet"),
        noise_scheduler=DDPMScheduler.from_config(scheduler_config),
        scheduler_config=scheduler_config,
        vae=load("vae") if kind != "pixel" else None,
        text_encoders=tuple(load(n) for n in names),
        tokenizers=tuple(load(n.replace("text_encoder", "tokenizer")) for n in names),
        source=str(spec),
    )


def detect_kind(folder: Path, index: dict) -> str:
    """``pixel`` without a VAE, ``sdxl`` with a second text encoder, else ``sd``."""
    if not (folder / "vae").is_dir() and not index.get("vae", [None])[0]:
        return "pixel"
    if (folder / "text_encoder_2").is_dir() or index.get("text_encoder_2", [None])[0]:
        return "sdxl"
    return "sd"


def resolve_folder(spec: str) -> Path:
    """The local folder of a spec: the path itself, a hub id's snapshot in the HF cache (downloaded
    first where the machine is online), or the bundled model's folder (trained first if absent)."""
    kind, sep, ref = spec.strip().partition(":")
    if sep and kind == "local":
        return _existing_folder(ref, spec)
    if sep and kind == "hub":
        return _hub_snapshot(ref)
    if sep and kind == "bundled":
        return _bundled_folder(ref)
    if Path(spec).expanduser().exists():
        return _existing_folder(spec, spec)
    raise ConfigError(
        f"diffusion model {spec!r}: no such folder; give local:PATH, hub:org/name or bundled:digits"
    )


def _bundled_folder(name: str) -> Path:
    if name not in BUNDLED:
        raise ConfigError(
            f"diffusion model bundled:{name}: no such bundled model; the bundled diffusion models are "
            + ", ".join(f"bundled:{known}" for known in BUNDLED)
        )
    from training.engine.diffusion.digits import ensure_digits_model  # scikit-learn loads only when used

    return ensure_digits_model()


def _existing_folder(ref: str, spec: str) -> Path:
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise ConfigError(f"diffusion model {spec}: {path} is not a folder")
    return path


def _hub_snapshot(repo_id: str) -> Path:
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"} or not hub_reachable():
        raise ConfigError(
            f"diffusion model hub:{repo_id} is not in the local Hugging Face cache and huggingface.co cannot "
            "be reached (offline machine): download it where there is network, or give a local folder"
        )
    try:
        return Path(snapshot_download(repo_id, ignore_patterns=HUB_IGNORE))
    except OSError as exc:
        raise ConfigError(f"diffusion model hub:{repo_id} could not be downloaded: {exc}") from exc


def _model_index(folder: Path, spec: str) -> dict:
    path = folder / "model_index.json"
    if not path.is_file():
        if not (folder / "unet").is_dir():
            raise ConfigError(
                f"diffusion model {spec}: {folder} is not a diffusers model folder "
                "(no model_index.json, no unet/)"
            )
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"diffusion model {spec}: {path} is not readable JSON ({exc})") from exc


def _scheduler_config(folder: Path, spec: str) -> dict:
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise ConfigError(f"diffusion model {spec}: {folder} lacks scheduler/scheduler_config.json")
    return json.loads(path.read_text())


def _load_component(folder: Path, index: dict, name: str, dtype: torch.dtype):
    """One subfolder through its class's ``from_pretrained``; the class comes from ``model_index.json``
    (only diffusers and transformers classes) or, for the UNet, from its own config."""
    entry = index.get(name) or [None, None]
    library, class_name = entry if entry[0] else DEFAULT_CLASSES[name]
    if name == "unet" and not entry[0]:
        class_name = json.loads((folder / "unet" / "config.json").read_text()).get("_class_name", class_name)
    module = {"diffusers": diffusers, "transformers": transformers}.get(library)
    cls = getattr(module, class_name, None) if module else None
    if cls is None:
        raise ConfigError(f"diffusion model {folder}: {name} class {library}.{class_name} is not supported")
    path = folder / name
    if name.startswith("tokenizer"):
        return cls.from_pretrained(path, local_files_only=True)
    model = cls.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    return model.eval().requires_grad_(False)
