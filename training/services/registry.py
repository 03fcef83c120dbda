"""The model registry: bundled, local-folder, hub and job-produced models a job can start from."""

from pathlib import Path

from django.core.exceptions import ValidationError

from training.engine import METHODS

from ..models import Location, ModelEntry, ModelKind

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_REF = "smollm2-135m-instruct"
DIGITS_NAME = "Digits diffusion (embedded)"
DIGITS_REF = "digits"


def model_entry_ensure_bundled() -> ModelEntry:
    """The bundled SmolLM2-135M-Instruct entry (created on first use)."""
    entry, _ = ModelEntry.objects.get_or_create(
        name=BUNDLED_NAME,
        defaults={"location": Location.BUNDLED, "path": BUNDLED_REF, "kind": ModelKind.CAUSAL_LM},
    )
    return entry


def model_entry_ensure_digits() -> ModelEntry:
    """The embedded pixel-space digits diffusion model's entry (created on first use; the engine trains
    the model itself into the model cache the first time a job loads ``bundled:digits``)."""
    entry, _ = ModelEntry.objects.get_or_create(
        name=DIGITS_NAME,
        defaults={"location": Location.BUNDLED, "path": DIGITS_REF, "kind": ModelKind.DIFFUSION},
    )
    return entry


def is_diffusers_folder(folder: Path) -> bool:
    """A diffusers model folder: ``model_index.json`` or a ``unet/`` subfolder (the engine loads either)."""
    return (folder / "model_index.json").is_file() or (folder / "unet").is_dir()


def model_entry_default(*, method: str) -> ModelEntry:
    """The base the launch form proposes for ``method``: the embedded digits model for a diffusion
    method, the bundled SmolLM2 otherwise."""
    if method_is_diffusion(method):
        return model_entry_ensure_digits()
    return model_entry_ensure_bundled()


def model_entry_register_local(*, name: str, path: str | Path) -> ModelEntry:
    """Register a local model folder under ``name``: a diffusers folder (``model_index.json`` or ``unet/``)
    as a diffusion model, a Hugging Face folder (config.json + safetensors) as a causal LM."""
    folder = Path(path).expanduser().resolve()
    if is_diffusers_folder(folder):
        kind = ModelKind.DIFFUSION
    elif (folder / "config.json").is_file():
        kind = ModelKind.CAUSAL_LM
    else:
        raise ValidationError(
            {
                "path": f"{folder}: no config.json (a Hugging Face model folder) and no model_index.json "
                "or unet/ (a diffusers folder) there."
            }
        )
    if ModelEntry.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A model named {name!r} is already registered."})
    return ModelEntry.objects.create(name=name, location=Location.LOCAL, path=str(folder), kind=kind)


def model_entry_register_from_job(*, job, folder: Path) -> ModelEntry:
    """Register a job's final model folder so it can be the base of the next job."""
    entry, _ = ModelEntry.objects.update_or_create(
        produced_by=job,
        defaults={
            "name": f"job-{job.pk}-{job.method}",
            "location": Location.JOB,
            "path": str(folder),
            "is_adapter": False,  # final/ holds full weights: a LoRA job's adapter is merged into it
            "base": job.base_model,
            "project": job.dataset_version.project,
            "kind": model_kind_trained(job.method),
        },
    )
    return entry


def model_entry_problem(entry: ModelEntry) -> str | None:
    """Why the engine could not load ``entry`` on this machine, or None (checked at launch)."""
    if entry.location not in (Location.LOCAL, Location.JOB):
        return None
    folder = Path(entry.path)
    if entry.kind == ModelKind.DIFFUSION:
        if not is_diffusers_folder(folder):
            return (
                f"model {entry.name}: {entry.path} has no model_index.json or unet/ "
                "(folder missing or not a diffusers model)."
            )
    elif not (folder / "config.json").is_file():
        return f"model {entry.name}: {entry.path} has no config.json (folder missing or not a model)."
    return None


KIND_NOUNS = {
    ModelKind.CAUSAL_LM: "causal LM",
    ModelKind.REWARD_MODEL: "reward model",
    ModelKind.DIFFUSION: "diffusion model",
}


def model_kind_trained(method: str) -> str:
    """The kind of model a job of ``method`` trains and registers (the method table says)."""
    return METHODS[method].model_kind if method in METHODS else ModelKind.CAUSAL_LM


def model_kinds_for(method: str) -> tuple[str, ...]:
    """The model kinds a job of ``method`` can start from: the kind it trains, and for a reward model
    also a causal LM (the body its score head goes on)."""
    trained = model_kind_trained(method)
    if trained == ModelKind.REWARD_MODEL:
        return (ModelKind.CAUSAL_LM, ModelKind.REWARD_MODEL)
    return (trained,)


def method_is_diffusion(method: str) -> bool:
    """Whether ``method`` trains diffusion models (its jobs draw samples, not text)."""
    return model_kind_trained(method) == ModelKind.DIFFUSION


def model_kind_problem(*, method: str, entry: ModelEntry) -> str | None:
    """Why ``entry`` cannot be the base of a ``method`` job (a diffusion model for a text method, or a
    text model for Diffusion-DPO), or None."""
    if entry.kind in model_kinds_for(method):
        return None
    if ModelKind.CAUSAL_LM in model_kinds_for(method):
        noun = KIND_NOUNS[entry.kind]
        return f"{method} trains a language model; {entry.name} is a {noun}: choose a language model."
    return (
        f"{method} trains a diffusion model; {entry.name} is a {entry.get_kind_display()}: "
        "choose a diffusion model."
    )
