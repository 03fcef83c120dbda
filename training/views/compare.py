"""Compare runs (overlay one metric, list config differences) and a finished job's evaluation panels."""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.access import project_member_required

from ..charts import compare_series, config_differences
from ..models import MetricPoint
from ..selectors import job_for_user, jobs_for_project, metrics_after
from ..services.evaluation import evaluation_report

MAX_COMPARED = 8


def _ids(request) -> list[int]:
    ids = []
    for raw in request.GET.getlist("jobs"):
        for part in raw.split(","):
            if part.strip().isdigit():
                ids.append(int(part))
    return list(dict.fromkeys(ids))[:MAX_COMPARED]


@require_GET
@project_member_required()
def job_compare(request, project_id):
    all_jobs = list(jobs_for_project(project=request.project))
    chosen = [job for job in all_jobs if job.pk in set(_ids(request))]
    names = sorted(set(MetricPoint.objects.filter(job__in=chosen).values_list("name", flat=True).distinct()))
    metric = request.GET.get("metric") or ("loss" if "loss" in names else (names[0] if names else "loss"))
    series = {
        job.pk: metrics_after(job_id=job.pk, names=[metric], limit=100_000)[0].get(metric, [])
        for job in chosen
    }
    labels = {job.pk: f"job {job.pk} · {job.method}" for job in chosen}
    diffs = config_differences({job.pk: job.config for job in chosen}) if len(chosen) > 1 else {}
    return render(
        request,
        "training/job_compare.html",
        {
            "project": request.project,
            "jobs": all_jobs,
            "chosen": chosen,
            "chosen_ids": [j.pk for j in chosen],
            "names": names,
            "metric": metric,
            "traces": compare_series(series, labels=labels),
            "diffs": diffs,
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
