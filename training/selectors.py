"""Read-side queries for the training pages, the API and the charts."""

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from annotation.access import project_for
from annotation.models import Project

from .job_stages import STAGES, stage_timeline
from .models import (
    Artifact,
    ArtifactKind,
    CandidateScore,
    MetricPoint,
    ModelEntry,
    PolicyComparison,
    RewardComparison,
    TrainingJob,
)
from .services.artifacts import sample_step
from .services.job_storage import USAGE_CACHE_KEY, folder_usage, job_folder

POINTS_PAGE = 5000
USAGE_CACHE_SECONDS = 60


def jobs_for_project(*, project) -> QuerySet[TrainingJob]:
    return (
        TrainingJob.objects.filter(dataset_version__project=project)
        .select_related("dataset_version", "base_model", "created_by")
        .order_by("-created_at")
    )


def jobs_for_version(*, version) -> QuerySet[TrainingJob]:
    return (
        TrainingJob.objects.filter(dataset_version=version)
        .select_related("base_model")
        .order_by("-created_at")
    )


def job_for_user(*, user, job_id: int, manager: bool = False, project_id: int | None = None) -> TrainingJob:
    """A job the user may see (a member of its project; ``manager`` for changes); 404 otherwise."""
    job = get_object_or_404(
        TrainingJob.objects.select_related("dataset_version__project", "base_model", "created_by"), pk=job_id
    )
    project, _ = project_for(user=user, project_id=job.dataset_version.project_id, manager=manager)
    if project_id is not None and project.pk != project_id:
        raise Http404("No such job in this project.")
    return job


def models_for_user(*, user, kinds=None) -> QuerySet[ModelEntry]:
    """The models ``user`` may see and start from: the global ones (bundled, admin-registered) and those
    produced in the projects they belong to (only those of ``kinds``, when given)."""
    entries = ModelEntry.objects.select_related("produced_by").order_by("location", "name")
    if kinds is not None:
        entries = entries.filter(kind__in=list(kinds))
    if user.is_superuser:
        return entries
    mine = Q(project__isnull=True) | Q(project__in=Project.objects.filter(memberships__user=user))
    return entries.filter(mine)


def metrics_after(
    *, job_id: int, cursor: int = 0, names=None, limit: int = POINTS_PAGE
) -> tuple[dict, int, bool]:
    """Points after step ``cursor``, at most about ``limit``, ending on a whole step.

    Returns ``({name: [[step, value, wall_time], ...]}, new_cursor, more)``; ``more`` is True when
    points after ``new_cursor`` remain.  Served by the (job, step) index."""
    rows = MetricPoint.objects.filter(job_id=job_id, step__gt=cursor)
    if names:
        rows = rows.filter(name__in=list(names))
    page = list(rows.order_by("step").values_list("step", "name", "value", "wall_time")[: limit + 1])
    more = len(page) > limit
    if more:
        last = page[-1][0]
        trimmed = [row for row in page if row[0] < last]
        page = trimmed or [row for row in page if row[0] == last]
    points: dict[str, list] = {}
    for step, name, value, wall in page:
        points.setdefault(name, []).append([step, value, wall])
    new_cursor = page[-1][0] if page else cursor
    return points, new_cursor, more


def metric_names(*, job_id: int) -> list[str]:
    return sorted(MetricPoint.objects.filter(job_id=job_id).values_list("name", flat=True).distinct())


def metrics_table(*, job_id: int):
    """Every point of a job, step-major: ``(step, name, value, wall_time)`` streamed."""
    rows = MetricPoint.objects.filter(job_id=job_id).order_by("step", "name")
    return rows.values_list("step", "name", "value", "wall_time").iterator(chunk_size=5000)


def last_values(*, job_id: int, names) -> dict[str, float | None]:
    """The latest value of each metric in ``names``."""
    found = {}
    for name in names:
        row = (
            MetricPoint.objects.filter(job_id=job_id, name=name)
            .order_by("-step")
            .values_list("value")
            .first()
        )
        if row is not None:
            found[name] = row[0]
    return found


def job_progress(*, job: TrainingJob, now=None) -> dict:
    """Percent done, throughput (steps/s over this attempt, or s/step when under 0.1 steps/s), the ETA in
    seconds while training, and, while running, the stage in words with its own progress."""
    now = now or timezone.now()
    total = job.total_steps or 0
    percent = min(100, round(100 * job.step / total)) if total else 0
    rate = eta = None
    if job.running_since and job.step > job.started_step:
        elapsed = (now - job.running_since).total_seconds()
        rate = (job.step - job.started_step) / elapsed if elapsed > 0 else None
        if rate and total and job.state == "running":
            eta = max(0.0, (total - job.step) / rate)
    training = job.stage in ("", "training")
    return {
        "percent": percent,
        "steps_per_s": rate if rate and rate >= 0.1 else None,
        "seconds_per_step": 1 / rate if rate and rate < 0.1 else None,
        "eta_seconds": eta if training else None,
        "step": job.step,
        "total": total,
        "stage": STAGES.get(job.stage, job.stage) if job.state == "running" else "",
        "stage_done": job.stage_done,
        "stage_total": job.stage_total if job.stage != "training" else 0,
        "timeline": stage_timeline(
            job.stage_history, until=job.finished_at or now, running=job.state == "running", step=job.step
        ),
    }


def artifacts_for(*, job) -> QuerySet[Artifact]:
    return Artifact.objects.filter(job=job).order_by("kind", "path")


def artifact_usage_for_project(*, project) -> dict:
    """What the project's job folders hold on disk: ``{"bytes", "jobs", "complete"}`` (hard-linked files
    once; ``complete`` False when the walk stopped at its bound and ``bytes`` is a lower bound).  Cached
    for USAGE_CACHE_SECONDS; deleting a job's files forgets it at once."""
    key = USAGE_CACHE_KEY.format(project_id=project.pk)
    found = cache.get(key)
    if found is None:
        folders = []
        for job in TrainingJob.objects.filter(dataset_version__project=project).only("pk", "config"):
            try:
                folder = job_folder(job)
            except ValidationError:
                continue
            if folder.is_dir():
                folders.append(folder)
        usage = folder_usage(folders)
        found = {"bytes": usage.bytes, "jobs": len(folders), "complete": usage.complete}
        cache.set(key, found, USAGE_CACHE_SECONDS)
    return found


def sample_artifacts(*, job) -> dict[int, Artifact]:
    """The job's sample folders (``samples/step-N``) by step, in step order."""
    found = {}
    for artifact in Artifact.objects.filter(job=job, kind=ArtifactKind.SAMPLES):
        step = sample_step(artifact)
        if step is not None:
            found[step] = artifact
    return dict(sorted(found.items()))


def candidate_scores_for_project(*, project, limit: int = 200) -> QuerySet[CandidateScore]:
    """Reward-model scores of the project's candidates, item by item, candidate by candidate."""
    return (
        CandidateScore.objects.filter(candidate__item__project=project)
        .select_related("candidate__item", "model", "scored_by")
        .order_by("candidate__item_id", "candidate__position", "model_name")[:limit]
    )


def reward_comparisons_for_project(*, project, limit: int = 50):
    """The project's DPO vs reward-model comparisons, newest first, with what their rows name."""
    return (
        RewardComparison.objects.filter(dataset_version__project=project)
        .select_related("job", "dataset_version", "policy_job", "reward_model")
        .order_by("-id")[:limit]
    )


def policy_comparisons_for_project(*, project, limit: int = 50):
    """The project's PPO vs DPO comparisons, newest first, with what their rows name."""
    return (
        PolicyComparison.objects.filter(dataset_version__project=project)
        .select_related("job", "dataset_version", "dpo_job", "ppo_job", "reward_model")
        .order_by("-id")[:limit]
    )


def loops_for_project(*, project) -> QuerySet:
    from .models import Loop

    return Loop.objects.filter(project=project).select_related("start_model", "reward_model").order_by("-id")
