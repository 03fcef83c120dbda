"""JSON API routes (mounted under /api/ by ``prefstudio.api``): projects, imports, tasks, versions, exports.

Roles as on the pages: any member may fetch tasks and submit judgments; managers import, freeze and
export. Outsiders get 404 for a project, annotators 403 for manager actions.
"""

import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from ninja import File, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as Unprocessable
from ninja.files import UploadedFile
from pydantic import Field

from .access import project_for
from .api_schemas import (
    ExportQuery,
    FreezeIn,
    ImportErrorOut,
    ImportOut,
    JudgmentIn,
    JudgmentOut,
    ProjectIn,
    ProjectOut,
    TaskOut,
    VersionOut,
    project_out,
    task_out,
    version_out,
)
from .forms import ProjectForm
from .models import Assignment, DatasetVersion
from .selectors import project_role, projects_for_user
from .services.assignments import assignment_take_next
from .services.exports import export_filename, export_write, jsonl_lines
from .services.import_jobs import import_job_run_inline
from .services.imports import FileFormatError
from .services.judgments import judgment_submit
from .services.projects import project_create
from .services.versions import FreezeError, FreezeRule, dataset_version_freeze, version_rows

router = Router(tags=["PrefStudio"])
IMPORT_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet", ".zip"}


class Detail(Schema):
    detail: str


class FieldErrors(Schema):
    detail: list[dict] = Field(description="[{loc: [...], msg: ...}]")


BODY_ERRORS = {400: Detail, 422: FieldErrors}
"""What a route with a JSON body answers to one it cannot parse (400) or that fails validation (422)."""


def _field_errors(errors: dict):
    """Django form errors as ninja's 422 shape: ``{"detail": [{"loc": [...], "msg": ...}]}``."""
    raise Unprocessable(
        [{"loc": ["body", name], "msg": " ".join(messages)} for name, messages in errors.items()]
    )


@router.get("/projects", response={200: list[ProjectOut]})
def projects_list(request):
    user = request.auth
    return [
        project_out(p, project_role(user=user, project=p))
        for p in projects_for_user(user=user).order_by("id")
    ]


@router.post("/projects", response={201: ProjectOut, 403: Detail, 409: Detail, **BODY_ERRORS})
def projects_create(request, payload: ProjectIn):
    if not request.auth.is_staff:
        raise PermissionDenied("Only staff users can create projects.")
    form = ProjectForm(data=payload.model_dump())
    if not form.is_valid():
        if [error.code for error in form.errors.as_data().get("name", [])] == ["unique"]:
            return Status(409, {"detail": " ".join(form.errors["name"])})
        _field_errors(form.errors)
    project = project_create(created_by=request.auth, **form.cleaned_data)
    return Status(201, project_out(project, "manager"))


@router.get("/projects/{project_id}", response={200: ProjectOut, 404: Detail, 422: FieldErrors})
def projects_get(request, project_id: int):
    project, role = project_for(user=request.auth, project_id=project_id)
    return project_out(project, role, overview=True)


@router.post(
    "/projects/{project_id}/imports",
    response={201: ImportOut, 400: Detail, 403: Detail, 404: Detail, 422: ImportErrorOut | FieldErrors},
)
def imports_create(request, project_id: int, file: File[UploadedFile]):
    """Validate and import a file within the request (same rules, report and import record as the page)."""
    project, _ = project_for(user=request.auth, project_id=project_id, manager=True)
    suffix = Path(file.name or "").suffix.lower()
    if suffix not in IMPORT_SUFFIXES:
        raise Unprocessable(
            [{"loc": ["file"], "msg": f"Upload a {', '.join(sorted(IMPORT_SUFFIXES))} file."}]
        )
    if file.size > settings.UPLOAD_MAX_BYTES:  # UploadLimitHandler stops such a file; this is a backstop
        message = f"The file is over {settings.UPLOAD_MAX_BYTES} bytes."
        raise Unprocessable([{"loc": ["file"], "msg": message}])
    try:
        job, outcome = import_job_run_inline(project=project, user=request.auth, upload=file)
    except FileFormatError as exc:
        raise Unprocessable([{"loc": ["file"], "msg": str(exc)}]) from exc
    report = outcome.report()
    if not outcome.ok:
        errors = [{"line": e["line"], "field": e["field"], "message": e["reason"]} for e in report["errors"]]
        detail = [{"loc": ["file", f"line {e['line']}", e["field"]], "msg": e["message"]} for e in errors]
        return Status(
            422,
            {
                "detail": detail,
                "errors": errors,
                "format": report["format"],
                "truncated": report["truncated"],
                "import_id": job.pk,
            },
        )
    out = {"format": report["format"], "rows_total": report["rows_total"], "counts": report["counts"]}
    return Status(201, {**out, "import_id": job.pk})


@router.get(
    "/projects/{project_id}/tasks/next", response={200: TaskOut, 204: None, 404: Detail, 422: FieldErrors}
)
def tasks_next(request, project_id: int):
    project, _ = project_for(user=request.auth, project_id=project_id)
    assignment = assignment_take_next(project=project, annotator=request.auth)
    if assignment is None:
        return Status(204, None)
    return task_out(assignment)


@router.post("/assignments/{assignment_id}/judgment", response={201: JudgmentOut, 404: Detail, **BODY_ERRORS})
def judgments_create(request, assignment_id: int, payload: JudgmentIn):
    assignment = get_object_or_404(
        Assignment.objects.select_related("task__project"), pk=assignment_id, annotator=request.auth
    )
    project_for(user=request.auth, project_id=assignment.task.project_id)
    judgment = judgment_submit(assignment=assignment, annotator=request.auth, **payload.model_dump())
    return Status(201, judgment)


@router.post(
    "/projects/{project_id}/versions",
    response={201: VersionOut, 403: Detail, 404: Detail, **BODY_ERRORS},
)
def versions_create(request, project_id: int, payload: FreezeIn):
    project, _ = project_for(user=request.auth, project_id=project_id, manager=True)
    data = payload.model_dump()
    seed, test_fraction = data.pop("seed"), data.pop("test_fraction")
    try:
        rule = FreezeRule(**data)
    except ValueError as exc:
        raise Unprocessable([{"loc": ["body"], "msg": str(exc)}]) from exc
    try:
        version = dataset_version_freeze(
            project=project, rule=rule, seed=seed, test_fraction=test_fraction, created_by=request.auth
        )
    except FreezeError as exc:
        raise HttpError(400, str(exc)) from exc
    return Status(201, version_out(version))


def _version_for_manager(user, version_id: int) -> DatasetVersion:
    version = get_object_or_404(DatasetVersion.objects.select_related("project"), pk=version_id)
    project_for(user=user, project_id=version.project_id, manager=True)
    return version


@router.get("/versions/{version_id}", response={200: VersionOut, 403: Detail, 404: Detail, 422: FieldErrors})
def versions_get(request, version_id: int):
    return version_out(_version_for_manager(request.auth, version_id))


@router.get("/versions/{version_id}/export", response={200: None, 403: Detail, 404: Detail, 422: FieldErrors})
def versions_export(request, version_id: int, query: Query[ExportQuery]):
    """The export file: JSONL (a .zip with images/ for image projects) or Parquet."""
    version = _version_for_manager(request.auth, version_id)
    fmt, split = query.format, query.split
    filename, content_type = export_filename(version=version, fmt=fmt, split=split)
    if filename.endswith(".jsonl"):
        lines = jsonl_lines(version_rows(version=version, split=split), with_split=split == "all")
        response = StreamingHttpResponse((line.encode() for line in lines), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    out = tempfile.TemporaryFile()  # noqa: SIM115 -- FileResponse closes (and so deletes) it
    export_write(version=version, fmt=fmt, split=split, out=out)
    out.seek(0)
    return FileResponse(out, as_attachment=True, filename=filename, content_type=content_type)
