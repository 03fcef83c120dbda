"""JSON API for training jobs (mounted at /api/jobs): create, list, get, metrics after a step, cancel, and
the reports of a run outside the studio's workers (a Slurm job's engine, ``--report-to``); and online loops
(/api/jobs/loops): create, list, get, cancel, resume.

Roles as on the pages: project members read, managers launch, cancel and resume."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema, Status
from pydantic import Field

from annotation.access import project_for
from annotation.api_schemas import BodyIn
from annotation.models import DatasetVersion

from .api_schemas import LoopIn, LoopOut, loop_field_errors, loop_out
from .models import Loop, LoopRound, TrainingJob
from .selectors import (
    job_for_user,
    job_progress,
    jobs_for_project,
    loops_for_project,
    metrics_after,
    models_for_user,
)
from .services.external import Report, ReportRefused, external_report
from .services.jobs import FIXED_FIELDS, training_job_cancel, training_job_launch
from .services.loops import loop_cancel, loop_create, loop_resume
from .services.rlhf import model_ref_ids

router = Router(tags=["Training jobs"])


class JobIn(BodyIn):
    dataset_version_id: int
    base_model_id: int
    queue: str = "cpu"
    eval_generations: int = Field(
        4, ge=0, le=32, description="Held-out prompts the base and trained models answer when the job ends."
    )
    config: dict = Field(
        description="Engine config fields: method plus hyperparameters (see /api/docs). A model besides the "
        "base (reward_model, value_model, dpo_model) is a model id from GET /api/jobs/models, never a path."
    )


class StageOut(Schema):
    stage: str
    label: str
    attempt: int
    seconds: float
    done: int
    total: int
    current: bool


class JobOut(Schema):
    id: int
    method: str
    state: str
    waiting_for_broker: bool
    step: int
    total_steps: int | None
    percent: int
    eta_seconds: float | None
    stage: str = Field(description="What a running job is doing now, in words; empty otherwise.")
    stages: list[StageOut] = Field(description="Each stage its attempts went through, in order.")
    queue: str
    project_id: int
    dataset_version_id: int
    base_model_id: int
    produced_model_id: int | None
    attempts: int
    error: str
    cancel_requested: bool
    config: dict
    created_at: datetime
    finished_at: datetime | None


class ModelOut(Schema):
    """A model the caller may start from (where it lives on the server is not shown)."""

    id: int
    name: str
    kind: str
    location: str
    is_adapter: bool
    produced_by_id: int | None
    project_id: int | None


class MetricsOut(Schema):
    points: dict[str, list[list[float | None]]]
    cursor: int
    more: bool
    state: str
    finished: bool


class Detail(Schema):
    detail: str | list


def job_out(job: TrainingJob) -> dict:
    progress = job_progress(job=job)
    produced = getattr(job, "produced_model", None) if job.state == "succeeded" else None
    return {
        "id": job.pk,
        "method": job.method,
        "state": job.state,
        "waiting_for_broker": job.awaiting_broker,
        "step": job.step,
        "total_steps": job.total_steps,
        "percent": progress["percent"],
        "eta_seconds": progress["eta_seconds"],
        "stage": progress["stage"],
        "stages": progress["timeline"],
        "queue": job.queue,
        "project_id": job.dataset_version.project_id,
        "dataset_version_id": job.dataset_version_id,
        "base_model_id": job.base_model_id,
        "produced_model_id": produced.pk if produced else None,
        "attempts": job.attempts,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "config": {  # no server paths: a model besides the base is shown by its entry id
            **{k: v for k, v in job.config.items() if k not in FIXED_FIELDS},
            **model_ref_ids(config=job.config),
        },
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


@router.get("/models", response={200: list[ModelOut]})
def models_list(request):
    return list(models_for_user(user=request.auth))


# --- online loops: declared before /{job_id}, which would otherwise take "loops" for a job id -------------

LOOPS = ["Online loops"]
ROUNDS = Prefetch("rounds", LoopRound.objects.select_related("policy", "dataset_version", "trained_model"))


def _loop_for(*, user, loop_id: int, manager: bool = False) -> Loop:
    """A loop of a project the user belongs to (``manager`` for changes), with its rounds; 404 otherwise."""
    loop = get_object_or_404(Loop.objects.prefetch_related(ROUNDS), pk=loop_id)
    project_for(user=user, project_id=loop.project_id, manager=manager)
    return loop


@router.post(
    "/loops", response={201: LoopOut, 400: Detail, 403: Detail, 404: Detail, 422: Detail}, tags=LOOPS
)
def loops_create(request, payload: LoopIn):
    """Queue a loop in the prompt version's project (managers only); a bad field is a 422 naming it (a
    setting as ``["body", "settings", name]``)."""
    version = get_object_or_404(DatasetVersion, pk=payload.prompt_version_id)
    project_for(user=request.auth, project_id=version.project_id, manager=True)
    usable = models_for_user(user=request.auth)
    models = {
        name: usable.filter(pk=getattr(payload, f"{name}_id")).first()
        for name in ("start_model", "reward_model")
    }
    try:
        loop = loop_create(
            name=payload.name,
            prompt_version=version,
            labeller=payload.labeller,
            settings=payload.settings,
            created_by=request.auth,
            **models,
        )
    except ValidationError as exc:
        unknown = {
            name: ["No such model among those you can use."] for name, m in models.items() if m is None
        }
        raise loop_field_errors({**exc.message_dict, **unknown}) from None
    return Status(201, loop_out(_loop_for(user=request.auth, loop_id=loop.pk)))


@router.get("/loops", response={200: list[LoopOut], 404: Detail, 422: Detail}, tags=LOOPS)
def loops_list(request, project_id: int):
    project, _ = project_for(user=request.auth, project_id=project_id)
    return [loop_out(loop) for loop in loops_for_project(project=project).prefetch_related(ROUNDS)]


@router.get("/loops/{loop_id}", response={200: LoopOut, 404: Detail, 422: Detail}, tags=LOOPS)
def loops_get(request, loop_id: int, examples: bool = False):
    """The loop and its rounds; each round's held-out example answers with ``examples=true``."""
    return loop_out(_loop_for(user=request.auth, loop_id=loop_id), examples=examples)


@router.post(
    "/loops/{loop_id}/cancel", response={200: LoopOut, 403: Detail, 404: Detail, 422: Detail}, tags=LOOPS
)
def loops_cancel(request, loop_id: int):
    """Stop the loop (and its round's training job); a finished loop is left as it is."""
    loop_cancel(loop=_loop_for(user=request.auth, loop_id=loop_id, manager=True))
    return loop_out(_loop_for(user=request.auth, loop_id=loop_id))


@router.post(
    "/loops/{loop_id}/resume",
    response={200: LoopOut, 403: Detail, 404: Detail, 409: Detail, 422: Detail},
    tags=LOOPS,
)
def loops_resume(request, loop_id: int):
    """Queue a cancelled or failed loop again: it goes on from the stage it stopped in (409 otherwise)."""
    try:
        loop_resume(loop=_loop_for(user=request.auth, loop_id=loop_id, manager=True))
    except ValidationError as exc:
        return Status(409, {"detail": " ".join(exc.messages)})
    return loop_out(_loop_for(user=request.auth, loop_id=loop_id))


@router.post("", response={202: JobOut, 400: Detail, 403: Detail, 404: Detail, 422: Detail})
def jobs_create(request, payload: JobIn):
    """Validate and queue a job (202: it runs once a worker takes it, ``waiting_for_broker`` while the broker
    is down); a bad field is a 422 naming it (the worker never sees an invalid config)."""
    version = get_object_or_404(DatasetVersion, pk=payload.dataset_version_id)
    project_for(user=request.auth, project_id=version.project_id, manager=True)
    base = get_object_or_404(models_for_user(user=request.auth), pk=payload.base_model_id)
    job = training_job_launch(
        params=payload.config,
        base_model=base,
        dataset_version=version,
        queue=payload.queue,
        created_by=request.auth,
        eval_generations=payload.eval_generations,
    )
    return Status(202, job_out(TrainingJob.objects.select_related("dataset_version").get(pk=job.pk)))


@router.get("", response={200: list[JobOut], 404: Detail, 422: Detail})
def jobs_list(request, project_id: int):
    project, _ = project_for(user=request.auth, project_id=project_id)
    return [job_out(job) for job in jobs_for_project(project=project)]


@router.get("/{job_id}", response={200: JobOut, 404: Detail, 422: Detail})
def jobs_get(request, job_id: int):
    return job_out(job_for_user(user=request.auth, job_id=job_id))


class MetricsQuery(Schema):
    after: int = Field(0, ge=0, description="The last step the caller holds; points after it are returned.")
    names: str = Field(
        "",
        max_length=10_000,
        pattern=r"^[^\x00-\x1f]*$",
        description="Comma-separated metric names (all when empty).",
    )
    limit: int = Field(5000, ge=1, le=100_000)


@router.get("/{job_id}/metrics", response={200: MetricsOut, 404: Detail, 422: Detail})
def jobs_metrics(request, job_id: int, query: Query[MetricsQuery]):
    job = job_for_user(user=request.auth, job_id=job_id)
    names = [n for n in query.names.split(",") if n] or None
    points, cursor, more = metrics_after(job_id=job.pk, cursor=query.after, names=names, limit=query.limit)
    return {"points": points, "cursor": cursor, "more": more, "state": job.state, "finished": job.finished}


@router.post("/{job_id}/cancel", response={200: JobOut, 403: Detail, 404: Detail, 422: Detail})
def jobs_cancel(request, job_id: int):
    job = training_job_cancel(job=job_for_user(user=request.auth, job_id=job_id, manager=True))
    return job_out(job)


class ReportIn(BodyIn):
    attempt: int | None = Field(None, description="The attempt the first report (null) was given.")
    points: list[dict] = Field([], description='Metric rows: {"step": N, name: value, ...}.')
    saved: list[str] = Field([], description="Folders now in place: checkpoint-N, samples/step-N, final.")
    outcome: str | None = Field(None, description="succeeded, failed or cancelled: the run ended.")
    step: int | None = Field(None, ge=0, description="With the outcome: steps done.")
    error: str = Field("", max_length=20_000)


class ReportOut(Schema):
    attempt: int
    cancel: bool


@router.post(
    "/{job_id}/report",
    response={200: ReportOut, 400: Detail, 403: Detail, 404: Detail, 409: Detail, 422: Detail},
)
def jobs_report(request, job_id: int, payload: ReportIn):
    """A run of a ``slurm`` job reports: the first report (``attempt`` null) takes the queued job."""
    job = job_for_user(user=request.auth, job_id=job_id, manager=True)
    try:
        return Status(200, external_report(job=job, report=Report(**payload.model_dump())))
    except ReportRefused as exc:
        return Status(exc.status, {"detail": str(exc)})
