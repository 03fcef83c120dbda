"""Where a job's files live: everything under ARTIFACT_ROOT, never a path taken from a request.

A job's output folder is named by its run token, which the server creates.  The launch form carries it
signed (so a preview and its launch share one folder); a token the server did not sign, or one a job
already has, is refused, and the job row's unique ``run_token`` makes two jobs sharing a folder impossible.
"""

import re
import secrets
from pathlib import Path

from django.conf import settings
from django.core import signing

from annotation.services.exports import export_filename

RUN_TOKEN = re.compile(r"[0-9a-f]{16,32}")
RUN_TOKEN_SALT = "prefstudio.training.run-token"  # noqa: S105 - a signing salt, not a secret
RUN_TOKEN_MAX_AGE = 24 * 3600


def artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT).resolve()


def new_run_token() -> str:
    return secrets.token_hex(8)


def run_dir(token: str) -> Path:
    """The output folder of the run named ``token`` (hex only, so it cannot leave ARTIFACT_ROOT)."""
    if not RUN_TOKEN.fullmatch(token or ""):
        raise ValueError(f"run token {token!r}: expected 16-32 lowercase hex digits")
    return artifact_root() / "jobs" / token


def run_token_sign(token: str) -> str:
    """What the launch form carries: the token, signed by this server."""
    return signing.dumps(token, salt=RUN_TOKEN_SALT)


def run_token_unsign(signed: str) -> str:
    """The token inside a launch form's signed value; ValueError when this server did not sign it (or
    not within a day)."""
    try:
        token = signing.loads(signed, salt=RUN_TOKEN_SALT, max_age=RUN_TOKEN_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise ValueError("The launch form expired; reload it.") from exc
    except signing.BadSignature as exc:
        raise ValueError("Invalid run token; reload the form.") from exc
    if not isinstance(token, str) or not RUN_TOKEN.fullmatch(token):
        raise ValueError("Invalid run token; reload the form.")
    return token


def reference_cache_dir() -> Path:
    """Where every job's reference log-probs are cached (content-keyed, so jobs share them)."""
    return artifact_root() / "ref_cache"


def dataset_file(version) -> Path:
    """The JSONL export (all splits, with a ``split`` column) a job of ``version`` trains on: a ``.zip`` of
    ``data.jsonl`` and ``images/`` for an image project (``annotation/services/exports.py``)."""
    name, _ = export_filename(version=version, fmt="jsonl", split="all")
    suffix = Path(name).suffix
    return artifact_root() / "datasets" / f"version-{version.pk}-{version.content_hash[:12]}{suffix}"


def encode_cache_dir() -> Path:
    """Where every diffusion job's VAE latents and caption embeddings are cached (content-keyed)."""
    return artifact_root() / "encode_cache"


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
