"""Where a job's files live: everything under ARTIFACT_ROOT, never a path taken from a request."""

import re
import secrets
from pathlib import Path

from django.conf import settings

RUN_TOKEN = re.compile(r"^[0-9a-f]{16,32}$")


def artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT).resolve()


def new_run_token() -> str:
    return secrets.token_hex(8)


def run_dir(token: str) -> Path:
    """The output folder of the run named ``token`` (hex only, so it cannot leave ARTIFACT_ROOT)."""
    if not RUN_TOKEN.match(token or ""):
        raise ValueError(f"run token {token!r}: expected 16-32 lowercase hex digits")
    return artifact_root() / "jobs" / token


def dataset_file(version) -> Path:
    """The JSONL export (all splits, with a ``split`` column) a job of ``version`` trains on."""
    return artifact_root() / "datasets" / f"version-{version.pk}-{version.content_hash[:12]}.jsonl"


def job_dir(job) -> Path:
    return Path(job.config["output_dir"])


def log_path(job) -> Path:
    return job_dir(job) / "log.txt"


def inside_artifacts(path: Path) -> Path:
    """``path`` resolved, or ValueError if it is not under ARTIFACT_ROOT."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(artifact_root()):
        raise ValueError(f"{path} is outside ARTIFACT_ROOT")
    return resolved
