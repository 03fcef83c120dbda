"""Freeing a finished job's disk: deleting its checkpoints (``job_artifacts_delete``) or the job itself
(``job_delete``), and measuring what a job folder holds (``folder_usage``).

What deletion keeps:

- ``job_artifacts_delete`` removes every ``checkpoint-N`` folder (full weights plus optimizer state: the
  bulk of a job's bytes) and any private folder a killed writer left behind.  The small files the job
  page reads (``metrics.jsonl``, ``log.txt``, ``config.yaml``, the evaluation report, sample folders) stay.
  The final model (``final/``, or ``merged/`` of older LoRA jobs) stays while the job's model is
  registered, since any job, loop or stream may start from a registered model; with ``include_model`` it
  goes too, with its registry entry, unless something still uses that entry.
- ``job_delete`` removes the job row (its metric points and artifact rows with it), its registered model
  and its whole folder, unless the job is referenced (a loop round, a comparison) or its model is used.

A model is "used" when a row would stop the database deleting it (``PROTECT``: jobs, loops, rounds,
streams and comparisons started from it, models derived from it) or would go with it (``CASCADE``:
candidate scores it gave); a generation job that merely recorded it (``SET_NULL``) does not count.
Queued and running jobs are refused: the runtime may still resume from their checkpoints.  The database
rows change first and the files go after the commit, so a failure never leaves a registered model whose
folder is gone.  Paths come from the job's own config and are resolved under ARTIFACT_ROOT/jobs.
"""

import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import models, transaction

from ..models import ModelEntry, TrainingJob
from .artifacts import MODEL_FOLDERS, artifacts_record
from .paths import artifact_root, inside_artifacts, job_dir

CHECKPOINT = re.compile(r"checkpoint-\d+")
LEFTOVER = re.compile(r"\..+\.(tmp|deleting)")
"""Private folders of the engine's writers (``runtime/checkpoint.py``) that a killed process left."""
MAX_ENTRIES = 200_000
"""The most files and folders one measurement walks: a larger tree is reported as "at least"."""
USAGE_CACHE_KEY = "training:artifact-usage:{project_id}"


@dataclass
class Usage:
    """Bytes of distinct files (a hard-linked file counted once) under some folders."""

    bytes: int = 0
    files: int = 0
    complete: bool = True
    """False when the walk stopped at MAX_ENTRIES: ``bytes`` is then a lower bound."""


def folder_usage(paths: Iterable[Path], *, limit: int = MAX_ENTRIES) -> Usage:
    """The bytes of the files and folders ``paths``, each inode once (``final/`` hard-links the last
    checkpoint's files), walking at most ``limit`` entries; symlinks are not followed."""
    usage, seen, walked = Usage(), set(), 0
    stack = [Path(p) for p in paths]
    while stack:
        path = stack.pop()
        walked += 1
        if walked > limit:
            usage.complete = False
            break
        try:
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                stack.extend(Path(entry.path) for entry in os.scandir(path))
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                usage.bytes, usage.files = usage.bytes + st.st_size, usage.files + 1
        except OSError:  # gone while walked
            continue
    return usage


def job_folder(job: TrainingJob) -> Path:
    """The job's output folder, resolved; ValidationError unless it lies below ARTIFACT_ROOT/jobs."""
    try:
        folder = inside_artifacts(job_dir(job))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"Job {job.pk}: its output folder is not under ARTIFACT_ROOT.") from exc
    jobs_root = artifact_root() / "jobs"
    if folder == jobs_root or not folder.is_relative_to(jobs_root):
        raise ValidationError(
            f"Job {job.pk}: its output folder is not a job folder under ARTIFACT_ROOT/jobs."
        )
    return folder


def usage_forget(*, project_id: int) -> None:
    """Drop the cached disk usage of a project's jobs (``selectors.artifact_usage_for_project``)."""
    cache.delete(USAGE_CACHE_KEY.format(project_id=project_id))


def _references(obj: models.Model, *, refuse: tuple) -> list[str]:
    """``"2 training jobs"``-style counts of the rows that point at ``obj`` through relations whose
    ``on_delete`` is in ``refuse`` (hidden ``related_name="+"`` relations included)."""
    found = []
    for rel in obj._meta.get_fields(include_hidden=True):
        if not (rel.is_relation and rel.auto_created and not rel.concrete) or rel.on_delete not in refuse:
            continue
        count = rel.related_model._base_manager.filter(**{rel.field.name: obj}).count()
        if count:
            meta = rel.related_model._meta
            found.append(f"{count} {meta.verbose_name if count == 1 else meta.verbose_name_plural}")
    return found


def _refuse_if_model_used(entry: ModelEntry) -> None:
    used = _references(entry, refuse=(models.PROTECT, models.CASCADE))
    if used:
        raise ValidationError(
            f"Model {entry.name} is still used by {', '.join(used)}; delete those first, or delete only "
            "the checkpoints (the final model stays)."
        )


def _locked_finished(job: TrainingJob, action: str) -> TrainingJob:
    """The job's row, locked; ValidationError while it is queued or running."""
    locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if not locked.finished:
        raise ValidationError(
            f"Job {job.pk} is {locked.get_state_display().lower()}: cancel it and wait for it to stop "
            f"before {action}."
        )
    return locked


def _doomed(folder: Path, *, keep_model: bool) -> list[Path]:
    """The entries of a job folder ``job_artifacts_delete`` removes."""
    if not folder.is_dir():
        return []
    return [
        child
        for child in sorted(folder.iterdir())
        if child.is_dir()
        and (
            CHECKPOINT.fullmatch(child.name)
            or LEFTOVER.fullmatch(child.name)
            or (child.name in MODEL_FOLDERS and not keep_model)
        )
    ]


def _freed(folder: Path, doomed: list[Path]) -> int:
    """Bytes deleting ``doomed`` frees: files whose every link lies in it (not those ``final/`` shares)."""
    kept = [child for child in folder.iterdir() if child not in doomed] if folder.is_dir() else []
    return folder_usage([folder]).bytes - folder_usage(kept).bytes


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def job_artifacts_delete(*, job: TrainingJob, include_model: bool = False) -> int:
    """Delete a finished job's checkpoints (and, with ``include_model``, its final model and registry
    entry); returns the bytes freed.  ValidationError while the job runs, or when ``include_model`` asks
    to delete a model something still uses.  The files go once the transaction commits."""
    folder = job_folder(job)
    with transaction.atomic():
        job = _locked_finished(job, "deleting its artifacts")
        entry = ModelEntry.objects.select_for_update().filter(produced_by=job).first()
        if entry is not None and include_model:
            _refuse_if_model_used(entry)
            entry.delete()
        doomed = _doomed(folder, keep_model=entry is not None and not include_model)
        freed = _freed(folder, doomed)
        project_id = job.dataset_version.project_id

        def remove() -> None:
            _remove(doomed)
            artifacts_record(job=job)
            usage_forget(project_id=project_id)

        transaction.on_commit(remove)
    return freed


def job_delete(*, job: TrainingJob) -> None:
    """Delete a finished job: its row (metric points and artifact rows with it), its registered model and
    its folder.  ValidationError while it runs, while a loop round or comparison refers to it, or while
    its model is used."""
    folder = job_folder(job)
    with transaction.atomic():
        job = _locked_finished(job, "deleting it")
        referenced = _references(job, refuse=(models.PROTECT,))
        if referenced:
            raise ValidationError(f"Job {job.pk} is part of {', '.join(referenced)}; it cannot be deleted.")
        entry = ModelEntry.objects.select_for_update().filter(produced_by=job).first()
        if entry is not None:
            _refuse_if_model_used(entry)
            entry.delete()
        project_id = job.dataset_version.project_id
        job.delete()

        def remove() -> None:
            _remove([folder])
            usage_forget(project_id=project_id)

        transaction.on_commit(remove)
