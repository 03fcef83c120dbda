"""The model registry: bundled, local-folder, hub and job-produced models a job can start from."""

from pathlib import Path

from django.core.exceptions import ValidationError

from ..models import Location, ModelEntry, ModelKind

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_REF = "smollm2-135m-instruct"


def model_entry_ensure_bundled() -> ModelEntry:
    """The bundled SmolLM2-135M-Instruct entry (created on first use)."""
    entry, _ = ModelEntry.objects.get_or_create(
        name=BUNDLED_NAME,
        defaults={"location": Location.BUNDLED, "path": BUNDLED_REF, "kind": ModelKind.CAUSAL_LM},
    )
    return entry


def model_entry_register_local(*, name: str, path: str | Path) -> ModelEntry:
    """Register a Hugging Face folder (config.json + safetensors) under ``name``."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ValidationError(
            {"path": f"{folder}: no config.json there (expected a Hugging Face model folder)."}
        )
    if ModelEntry.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A model named {name!r} is already registered."})
    return ModelEntry.objects.create(name=name, location=Location.LOCAL, path=str(folder))


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
            "kind": job.base_model.kind,
        },
    )
    return entry


def model_entry_problem(entry: ModelEntry) -> str | None:
    """Why the engine could not load ``entry`` on this machine, or None (checked at launch)."""
    if entry.location in (Location.LOCAL, Location.JOB) and not (Path(entry.path) / "config.json").is_file():
        return f"model {entry.name}: {entry.path} has no config.json (folder missing or not a model)."
    return None
