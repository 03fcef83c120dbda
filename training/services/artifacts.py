"""A job's artifacts: checkpoints, adapters, the final model, eval reports, samples, metrics — with sizes
and sha256, recorded from its output folder (relative to ARTIFACT_ROOT)."""

import hashlib
import re
from pathlib import Path

from ..models import Artifact, ArtifactKind
from .paths import artifact_root, inside_artifacts, job_dir

FILES = {
    "metrics.jsonl": ArtifactKind.METRICS,
    "config.yaml": ArtifactKind.CONFIG,
    "eval_report.json": ArtifactKind.EVAL_REPORT,
    "samples.jsonl": ArtifactKind.SAMPLES,
}
MODEL_FOLDERS = ("final", "merged")  # merged/: the final model of LoRA jobs run before final/ existed
CHUNK = 1024 * 1024


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(path: Path) -> tuple[int, str]:
    """``(bytes, sha256)`` of a file, or of a folder (over its files' relative names and digests)."""
    if path.is_file():
        return path.stat().st_size, _file_sha256(path)
    digest, size = hashlib.sha256(), 0
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        size += child.stat().st_size
        digest.update(f"{child.relative_to(path).as_posix()}\0{_file_sha256(child)}\n".encode())
    return size, digest.hexdigest()


def _kind_of(path: Path) -> str | None:
    if path.is_dir():
        if path.name in MODEL_FOLDERS:
            return ArtifactKind.MODEL
        if re.fullmatch(r"checkpoint-\d+", path.name):
            return (
                ArtifactKind.ADAPTER
                if (path / "adapter_model.safetensors").is_file()
                else ArtifactKind.CHECKPOINT
            )
        return None
    return FILES.get(path.name)


def artifacts_record(*, job) -> list[Artifact]:
    """Record (or refresh) every artifact in the job's output folder; vanished ones are dropped."""
    folder = job_dir(job)
    root = artifact_root()
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        kind = _kind_of(path)
        if kind is None:
            continue
        size, sha = tree_digest(path)
        artifact, _ = Artifact.objects.update_or_create(
            job=job,
            path=path.resolve().relative_to(root).as_posix(),
            defaults={"kind": kind, "size": size, "sha256": sha},
        )
        found.append(artifact)
    Artifact.objects.filter(job=job).exclude(pk__in=[a.pk for a in found]).delete()
    return found


def artifact_path(artifact: Artifact) -> Path:
    """The artifact's file or folder on disk (checked to lie under ARTIFACT_ROOT)."""
    return inside_artifacts(artifact_root() / artifact.path)
