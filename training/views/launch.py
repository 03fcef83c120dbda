"""The launch form (per method, generated from the engine's config dataclass), YAML preview and clone."""

import yaml
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from annotation.access import project_member_required
from training.engine import METHODS

from ..charts import flat
from ..forms import LaunchForm
from ..method_families import method_groups
from ..models import TrainingJob
from ..presets import PRESETS, preset_names, preset_values
from ..selectors import job_for_user
from ..services.jobs import EVAL_GENERATIONS, run_time_estimate, training_job_queue, version_problem
from ..services.registry import model_entry_default


def flip_rate_estimate(stats: dict) -> float | None:
    """The version's best estimate of the label flip rate: gold-measured when gold votes exist."""
    if stats.get("label_flip_gold_votes") and stats.get("label_flip_rate_gold") is not None:
        return float(stats["label_flip_rate_gold"])
    value = stats.get("label_flip_rate")
    return None if value is None else float(value)


def config_yaml(config: dict) -> str:
    """The YAML the worker runs (the file ``python -m training.engine train`` accepts)."""
    return yaml.safe_dump(flat(config), sort_keys=False)


def _initial(request, project, method: str, clone: TrainingJob | None) -> tuple[dict, dict]:
    """``(form initial, hyperparameter initial)`` from a cloned job, or the chosen preset and version's
    stats."""
    if clone is not None:
        initial = {
            "base_model": clone.base_model_id,
            "dataset_version": clone.dataset_version_id,
            "queue": clone.queue,
            "eval_generations": clone.eval_generations,
        }
        return initial, clone.config
    version = project.versions.filter(pk=request.GET.get("version") or 0).first() or project.versions.last()
    initial = {
        "dataset_version": version.pk if version else None,
        "base_model": model_entry_default(method=method).pk,
    }
    hyper = preset_values(method, request.GET.get("preset", "paper"))
    epsilon = flip_rate_estimate(version.stats) if method == "rdpo" and version is not None else None
    if epsilon is not None:
        hyper["epsilon"] = round(min(0.49, max(0.0, epsilon)), 4)
    return initial, hyper


@require_http_methods(["GET", "POST"])
@project_member_required(manager=True)
def job_new(request, project_id):
    project = request.project
    clone = None
    if request.GET.get("clone", "").isdigit():
        clone = job_for_user(user=request.user, job_id=int(request.GET["clone"]), project_id=project_id)
    default = default_method(project.task_type)
    method = request.POST.get("method") or request.GET.get("method") or (clone.method if clone else default)
    if method not in METHODS:
        method = default
    initial, hyper = _initial(request, project, method, clone)
    if request.method == "GET":
        form = LaunchForm(
            method=method, project=project, user=request.user, initial=initial, initial_config=hyper
        )
        return _render(request, form, clone=clone)
    form = LaunchForm(request.POST, method=method, project=project, user=request.user)
    if not form.is_valid():
        return _render(request, form, clone=clone, status=422)
    if request.POST.get("action") == "preview":
        return _render(request, form, clone=clone, preview=config_yaml(form.config))
    data = form.cleaned_data
    try:
        job = training_job_queue(
            config=form.config,
            run_token=data["run_token"],
            base_model=data["base_model"],
            dataset_version=data["dataset_version"],
            queue=data["queue"],
            created_by=request.user,
            source=form.source,
            eval_generations=EVAL_GENERATIONS
            if data["eval_generations"] is None
            else data["eval_generations"],
        )
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return _render(request, form, clone=clone, status=422)
    return redirect("job-detail", project_id=project_id, job_id=job.pk)


def default_method(task_type: str) -> str:
    """The method the form opens with: dpo where it trains on ``task_type``, else the first that does."""
    names = methods_for(task_type, also="dpo")
    return "dpo" if task_type in METHODS["dpo"].accepts else next((n for n in names if n != "dpo"), "dpo")


def methods_for(task_type: str, *, also: str) -> list[str]:
    """The methods that train on a project of ``task_type`` (and ``also``, the one the form shows)."""
    return sorted(name for name, method in METHODS.items() if task_type in method.accepts or name == also)


def _estimate(form) -> dict | None:
    """The run time the form's current settings should take (``services.jobs.run_time_estimate``)."""
    values = form.cleaned_data if form.is_bound and hasattr(form, "cleaned_data") else None
    if values is None:
        values = {name: form.get_initial_for_field(field, name) for name, field in form.fields.items()}
    params = {
        "method": form.method,
        **{n: values.get(n) for n in form.hyper_names if values.get(n) is not None},
    }
    generations = values.get("eval_generations")
    seconds, steps = run_time_estimate(
        params=params,
        base_model=_entry(values.get("base_model"), form.fields["base_model"].queryset),
        dataset_version=_entry(values.get("dataset_version"), form.fields["dataset_version"].queryset),
        eval_generations=EVAL_GENERATIONS if generations in (None, "") else int(generations),
    )
    if steps is None:
        return None
    return {"steps": steps, "minutes": None if seconds is None else max(1, round(seconds / 60))}


def _method_groups(form, task_type: str) -> list[dict]:
    """The methods by family: those of the project's kind (and the one shown), each with why it does not
    fit the chosen version (None when it does); families left empty are dropped."""
    version = _entry(_chosen(form, "dataset_version"), form.fields["dataset_version"].queryset)
    offered = set(methods_for(task_type, also=form.method))

    def problem_of(name: str) -> str | None:
        if version is None:
            return "no frozen dataset version to train on"
        return version_problem(method=name, dataset_version=version)

    groups = []
    for group in method_groups(problem_of=problem_of):
        methods = [m for m in group["methods"] if m["name"] in offered]
        if methods:
            groups.append({**group, "methods": methods})
    return groups


def _chosen(form, name: str):
    """The value the form shows for ``name``: what was posted, else its initial."""
    if form.is_bound:
        return form.data.get(name)
    return form.get_initial_for_field(form.fields[name], name)


def _entry(value, queryset):
    if value is None or value == "":
        return None
    if hasattr(value, "pk"):
        return value
    return queryset.filter(pk=value).first() if str(value).isdigit() else None


def _render(request, form, *, clone=None, preview=None, status=200):
    context = {
        "project": request.project,
        "form": form,
        "method": form.method,
        "method_groups": _method_groups(form, request.project.task_type),
        "has_versions": request.project.versions.exists(),
        "clone": clone,
        "preview": preview,
        "method_doc": METHODS[form.method].doc,
        "presets": [(name, PRESETS[name]) for name in preset_names(form.method)],
        "preset": request.GET.get("preset", "paper"),
        "estimate": _estimate(form),
    }
    template = "training/job_new.html#config-preview" if request.htmx and preview else "training/job_new.html"
    return render(request, template, context, status=status)


@require_GET
@project_member_required(manager=True)
def job_clone(request, project_id, job_id):
    job = job_for_user(user=request.user, job_id=job_id, project_id=project_id)
    return redirect(f"{reverse('job-new', args=[project_id])}?method={job.method}&clone={job.pk}")
