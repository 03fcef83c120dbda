"""Compare runs (overlay one metric, list config differences) and a finished job's evaluation panels.

Runs of different methods overlay the metrics they share (the metric menu lists those first); when the
runs include a PPO-family job and a DPO-family job, panels put each family's counterparts of one quantity
side by side (``charts.COUNTERPARTS``), labelled by job, method and metric."""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.access import project_member_required

from ..charts import (
    compare_series,
    config_differences,
    counterpart_metrics,
    counterpart_panels,
    difference_rows,
)
from ..models import MetricPoint
from ..selectors import job_for_user, jobs_for_project, metrics_after
from ..services.evaluation import evaluation_report
from ..services.policy_comparison import is_ppo_family
from ..services.reward_comparison import is_dpo_family
from ..services.rlhf import model_labels_in

MAX_COMPARED = 8


def _ids(request) -> list[int]:
    ids = []
    for raw in request.GET.getlist("jobs"):
        for part in raw.split(","):
            if part.strip().isdigit():
                ids.append(int(part))
    return list(dict.fromkeys(ids))[:MAX_COMPARED]


def _families(jobs) -> dict[int, str]:
    """``{job: "ppo" | "dpo"}`` for the jobs of either family, when both families are present."""
    families = {}
    for job in jobs:
        if is_ppo_family(job.method):
            families[job.pk] = "ppo"
        elif is_dpo_family(job.method):
            families[job.pk] = "dpo"
    return families if len(set(families.values())) == 2 else {}


def _counterparts(chosen, labels) -> list[dict]:
    families = _families(chosen)
    if not families:
        return []
    names = counterpart_metrics()
    points = {pk: metrics_after(job_id=pk, names=names, limit=100_000)[0] for pk in families}
    return counterpart_panels(points, families=families, labels=labels)


def _metric_names(chosen) -> tuple[list[str], list[str]]:
    """The chosen jobs' metric names: those every job has, and the others."""
    by_job: dict[int, set[str]] = {job.pk: set() for job in chosen}
    rows = MetricPoint.objects.filter(job__in=chosen).values_list("job_id", "name").distinct()
    for job_id, name in rows:
        by_job[job_id].add(name)
    shared = set.intersection(*by_job.values()) if by_job else set()
    return sorted(shared), sorted(set().union(*by_job.values()) - shared)


@require_GET
@project_member_required()
def job_compare(request, project_id):
    all_jobs = list(jobs_for_project(project=request.project))
    chosen = [job for job in all_jobs if job.pk in set(_ids(request))]
    shared, others = _metric_names(chosen)
    names = shared + others
    default = "loss" if "loss" in shared else (names[0] if names else "loss")
    metric = request.GET.get("metric") or default
    series = {
        job.pk: metrics_after(job_id=job.pk, names=[metric], limit=100_000)[0].get(metric, [])
        for job in chosen
    }
    labels = {job.pk: f"job {job.pk} · {job.method}" for job in chosen}
    configs = {job.pk: model_labels_in(job.config) for job in chosen}
    diffs = config_differences(configs) if len(chosen) > 1 else {}
    return render(
        request,
        "training/job_compare.html",
        {
            "project": request.project,
            "jobs": all_jobs,
            "chosen": chosen,
            "chosen_ids": [j.pk for j in chosen],
            "names": names,
            "shared_names": shared,
            "other_names": others,
            "metric": metric,
            "traces": compare_series(series, labels=labels),
            "diffs": diffs,
            "diff_rows": difference_rows(diffs, [j.pk for j in chosen]),
            "missing": [labels[pk] for pk, points in series.items() if not points],
            "counterparts": _counterparts(chosen, labels),
        },
    )


@require_GET
@project_member_required()
def job_evaluation(request, project_id, job_id):
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    report = evaluation_report(job=job)
    if report is None:
        raise Http404("This job has no evaluation yet (it runs when the job succeeds).")
    return render(
        request, "training/job_evaluation.html", {"project": request.project, "job": job, "report": report}
    )
