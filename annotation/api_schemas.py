"""Request and response shapes of the JSON API (``annotation.api``)."""

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import Field, model_validator

from .models import Assignment, DatasetVersion, Project, TaskType
from .selectors import project_overview

TaskTypeName = Literal[tuple(TaskType.values)]  # type: ignore[valid-type]


def _json_kind(value) -> str:
    if value is None:
        return "null"
    kinds = {list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


class BodyIn(Schema):
    """A JSON request body, which must be an object: ninja's Schema reads any value through attribute
    access, so a list, a string or null would otherwise pass as an object whose fields all take their
    defaults (a ``[]`` posted to freeze made a version)."""

    @model_validator(mode="wrap")
    @classmethod
    def _an_object(cls, data, handler):
        if not isinstance(data, dict | Schema):
            raise ValueError(f"The request body must be a JSON object, not {_json_kind(data)}.")
        return handler(data)


class ProjectIn(BodyIn):
    name: str = Field(min_length=1, max_length=200)
    task_type: TaskTypeName = "pairwise"
    overlap: int = Field(1, ge=1, le=50)
    assignment_ttl_minutes: int = Field(30, ge=1, le=10_080)
    guidelines: str = Field("", max_length=100_000)


class ProjectOut(Schema):
    id: int
    name: str
    task_type: str
    overlap: int
    role: str | None
    counts: dict | None = None


def project_out(project: Project, role: str | None, *, overview: bool = False) -> dict:
    out = {"id": project.pk, "name": project.name, "task_type": project.task_type, "overlap": project.overlap}
    out["role"] = role
    if overview:
        counts = project_overview(project=project)
        out["counts"] = {k: v for k, v in counts.items() if k != "members"}
    return out


class ImportOut(Schema):
    format: str
    rows_total: int
    counts: dict
    import_id: int
    """The import's record: its report page is /projects/{project}/import/{import_id}/."""


class RowErrorOut(Schema):
    line: int
    field: str
    message: str


class ImportErrorOut(Schema):
    detail: list[dict]
    errors: list[RowErrorOut]
    format: str
    truncated: bool
    import_id: int


class CandidateOut(Schema):
    label: str
    text: str
    messages: list[dict] | None = None
    steps: list | None = None
    sentences: list | None = None
    image: dict | None = None


class TaskOut(Schema):
    task_id: int
    assignment_id: int
    expires_at: datetime
    prompt: str
    messages: list[dict] | None = None
    images: list[dict] = []
    candidates: list[CandidateOut]


def _image(asset) -> dict | None:
    if asset is None:
        return None
    return {"sha256": asset.sha256, "width": asset.width, "height": asset.height, "url": asset.file.url}


def task_out(assignment: Assignment) -> dict:
    """The task with candidates labelled a, b, … in the task's order (the ``choice`` order); no provenance."""
    task = assignment.task
    item = task.item
    by_id = {c.pk: c for c in item.candidates.select_related("asset").filter(pk__in=task.candidate_ids)}
    candidates = []
    for index, candidate_id in enumerate(task.candidate_ids):
        c = by_id[candidate_id]
        candidates.append(
            {
                "label": chr(ord("a") + index) if index < 26 else str(index),
                "text": c.text,
                "messages": c.messages,
                "steps": c.steps,
                "sentences": c.sentences,
                "image": _image(c.asset),
            }
        )
    return {
        "task_id": task.pk,
        "assignment_id": assignment.pk,
        "expires_at": assignment.expires_at,
        "prompt": item.prompt,
        "messages": item.messages,
        "images": [_image(i.asset) for i in item.images.select_related("asset")],
        "candidates": candidates,
    }


class JudgmentIn(BodyIn):
    choice: Literal["a", "b", "tie", "both_bad"]
    strength: int | None = Field(None, ge=1, le=3)
    rationale: str = Field("", max_length=5000)
    time_spent_ms: int | None = Field(None, ge=0, le=2**31 - 1)


class JudgmentOut(Schema):
    id: int
    task_id: int
    choice: str
    strength: int | None
    created_at: datetime


class FreezeIn(BodyIn):
    min_votes: int = Field(1, ge=1, le=1000)
    min_strength: int | None = Field(None, ge=1, le=3)
    drop_ties: bool = True
    drop_both_bad: bool = True
    min_agreement: float = Field(0.5, ge=0, le=1)
    seed: int = Field(0, ge=-(2**31), le=2**31 - 1)
    test_fraction: float = Field(0.1, ge=0, lt=1)


class VersionOut(Schema):
    id: int
    project_id: int
    number: int
    rule: dict
    seed: int
    test_fraction: float
    stats: dict
    content_hash: str
    conversational: bool
    created_at: datetime


def version_out(version: DatasetVersion) -> DatasetVersion:
    return version


class ExportQuery(Schema):
    format: Literal["jsonl", "parquet"] = "jsonl"
    split: Literal["all", "train", "test"] = "all"
