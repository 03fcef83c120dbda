"""A job's artifacts: checkpoints, adapters, the final model, eval reports, samples, metrics — with sizes
and sha256, relative to ARTIFACT_ROOT.  Checkpoints, ``final/`` and the sample folders ``samples/step-N``
are recorded as the run writes them (``artifact_record``, from the runner's ``on_saved``); the rest when
the attempt ends (``artifacts_record``), in the transaction that publishes its outcome.

A sample folder holds ``sample-<i>.png`` and ``samples.json`` (``{"samples": [{"file", "caption",
"seed"}…], "steps", "guidance_scale"}``); ``sample_manifest`` reads it back, keeping only entries whose
file name is one the engine writes, so no name from the file reaches a path or a page unchecked."""

import hashlib
import json
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
ADAPTER_FILES = ("adapter_model.safetensors", "pytorch_lora_weights.safetensors")  # peft, diffusers LoRA
SAMPLES_FOLDER = "samples"
SAMPLE_STEP = re.compile(r"step-(\d{1,9})")
SAMPLE_FILE = re.compile(r"sample-\d{1,4}\.png")
MANIFEST = "samples.json"
MAX_CAPTION = 1000
CHUNK = 1024 * 1024


class Digests:
    """sha256 of files, each computed once per file version: ``final/`` links the last checkpoint's
    files, so recording both hashes them once."""

    def __init__(self) -> None:
        self.known: dict[tuple[int, int, int, int], str] = {}

    def file(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self.known:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while block := fh.read(CHUNK):
                    digest.update(block)
            self.known[key] = digest.hexdigest()
        return self.known[key]

    def tree(self, path: Path) -> tuple[int, str]:
        """``(bytes, sha256)`` of a file, or of a folder (over its files' relative names and digests)."""
        if path.is_file():
            return path.stat().st_size, self.file(path)
        digest, size = hashlib.sha256(), 0
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            size += child.stat().st_size
            digest.update(f"{child.relative_to(path).as_posix()}\0{self.file(child)}\n".encode())
        return size, digest.hexdigest()


def tree_digest(path: Path) -> tuple[int, str]:
    return Digests().tree(path)


def _kind_of(path: Path) -> str | None:
    if path.is_dir():
        if path.name in MODEL_FOLDERS:
            return ArtifactKind.MODEL
        if re.fullmatch(r"checkpoint-\d+", path.name):
            adapter = any((path / name).is_file() for name in ADAPTER_FILES)
            return ArtifactKind.ADAPTER if adapter else ArtifactKind.CHECKPOINT
        if path.parent.name == SAMPLES_FOLDER and SAMPLE_STEP.fullmatch(path.name):
            return ArtifactKind.SAMPLES
        return None
    return FILES.get(path.name)


def _outputs(folder: Path) -> list[Path]:
    """The job folder's entries that may be artifacts, and each sample folder under ``samples/``."""
    if not folder.is_dir():
        return []
    samples = folder / SAMPLES_FOLDER
    nested = sorted(samples.iterdir()) if samples.is_dir() else []
    return [*sorted(folder.iterdir()), *nested]


CHECKPOINT_KINDS = (ArtifactKind.CHECKPOINT, ArtifactKind.ADAPTER)


def artifact_record(*, job, path: Path, digests: Digests) -> Artifact | None:
    """Record one artifact as it is written (hashed now, once); None for a path that is no artifact, or
    for a checkpoint the run deleted (``keep_checkpoints``) before it was hashed.  Recording a checkpoint
    also drops the rows of the job's checkpoints the run has deleted since."""
    kind = _kind_of(path)
    if kind is None:
        return None
    try:
        size, sha = digests.tree(path)
    except FileNotFoundError:  # the engine's process pruned it while this one was hashing it
        return None
    if not path.exists():
        return None
    artifact, _ = Artifact.objects.update_or_create(
        job=job,
        path=path.resolve().relative_to(artifact_root()).as_posix(),
        defaults={"kind": kind, "size": size, "sha256": sha},
    )
    if kind in CHECKPOINT_KINDS:
        artifacts_drop_pruned(job=job)
    return artifact


def artifacts_drop_pruned(*, job) -> int:
    """Delete the rows of the job's checkpoint artifacts whose folders are gone; how many."""
    root = artifact_root()
    gone = [
        a.pk
        for a in Artifact.objects.filter(job=job, kind__in=CHECKPOINT_KINDS)
        if not (root / a.path).is_dir()
    ]
    if gone:
        Artifact.objects.filter(pk__in=gone).delete()
    return len(gone)


def artifacts_record(*, job, digests: Digests | None = None) -> list[Artifact]:
    """Complete the job's artifact list from its output folder: the small files (metrics, config, reports)
    are hashed again, folders already recorded as written are trusted (a folder is written once, privately,
    and renamed into place), new ones are hashed; vanished ones are dropped."""
    digests = digests or Digests()
    folder = job_dir(job)
    root = artifact_root()
    recorded = {a.path: a for a in Artifact.objects.filter(job=job)}
    found = []
    for path in _outputs(folder):
        relative = path.resolve().relative_to(root).as_posix() if _kind_of(path) else None
        if relative is None:
            continue
        if path.is_dir() and relative in recorded:
            found.append(recorded[relative])
        else:
            found.append(artifact_record(job=job, path=path, digests=digests))
    Artifact.objects.filter(job=job).exclude(pk__in=[a.pk for a in found]).delete()
    return found


def artifact_path(artifact: Artifact) -> Path:
    """The artifact's file or folder on disk (checked to lie under ARTIFACT_ROOT)."""
    return inside_artifacts(artifact_root() / artifact.path)


def sample_step(artifact: Artifact) -> int | None:
    """The step of a sample folder artifact (``…/samples/step-N``), or None for any other artifact."""
    parent, _, name = artifact.path.rpartition("/")
    match = SAMPLE_STEP.fullmatch(name)
    if artifact.kind != ArtifactKind.SAMPLES or match is None or not parent.endswith(SAMPLES_FOLDER):
        return None
    return int(match.group(1))


def sample_manifest(artifact: Artifact) -> list[dict]:
    """The samples of a sample folder artifact: ``[{"file", "caption", "seed"}]`` in grid order, only the
    entries whose file is an engine-named PNG present in the folder ([] when the folder or its
    ``samples.json`` is gone or unreadable)."""
    try:
        folder = artifact_path(artifact)
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = data.get("samples") if isinstance(data, dict) else None
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            continue
        if not SAMPLE_FILE.fullmatch(entry["file"]) or not (folder / entry["file"]).is_file():
            continue
        caption = entry.get("caption")
        seed = entry.get("seed")
        found.append(
            {
                "file": entry["file"],
                "caption": caption[:MAX_CAPTION] if isinstance(caption, str) else "",
                "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            }
        )
    return found


def sample_file(artifact: Artifact, name: str) -> Path | None:
    """The PNG ``name`` of a sample folder artifact, or None unless ``name`` is an engine-named sample
    that its ``samples.json`` lists (so no other file of the folder, or outside it, is ever served)."""
    if not SAMPLE_FILE.fullmatch(name or "") or sample_step(artifact) is None:
        return None
    if name not in {entry["file"] for entry in sample_manifest(artifact)}:
        return None
    return artifact_path(artifact) / name
