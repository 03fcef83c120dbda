"""Data construction: gold items, Step-DPO problems and proposal decisions, multi-image building, and the
per-type agreement fragment. Project managers only.  (Generation and the step check are model work: they
live in the training app, ``training/views/generation.py``.)"""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..access import project_member_required
from ..forms import add_validation_error
from ..models import Item, TaskType
from ..services.agreement import project_type_agreement
from ..services.gold import item_gold_mark, item_gold_unmark, project_gold_rate_set
from ..services.multi_image_build import multi_image_items_build
from ..services.step_pipeline import arithmetic_items_add, step_proposal_review

GOLD_PAGE = 100


# --- gold ------------------------------------------------------------------------------------------


def _gold_payload(post, item: Item, task_type: str) -> dict:
    """The expected judgment from the gold form: ranks, first wrong steps or sentence labels per response."""
    payload: dict = {}
    ranks = {c.pk: post.get(f"rank_{c.pk}", "").strip() for c in item.candidates.all()}
    if all(ranks.values()) and ranks:
        try:
            by_rank: dict[int, list[int]] = {}
            for pk, rank in ranks.items():
                by_rank.setdefault(int(rank), []).append(pk)
        except ValueError:
            raise ValidationError("Ranks are whole numbers (1 = best; equal numbers tie).") from None
        payload["ranking"] = [by_rank[rank] for rank in sorted(by_rank)]
    for candidate in item.candidates.all():
        wrong = post.get(f"wrong_{candidate.pk}")
        if wrong is not None and task_type == TaskType.STEPWISE:
            wrong = wrong.strip()
            if wrong and not wrong.isdigit():
                raise ValidationError(f"Response {candidate.position + 1}: the wrong step is a step number.")
            steps = payload.setdefault("first_wrong_step", {})
            steps[str(candidate.pk)] = int(wrong) - 1 if wrong else None
        labels = post.get(f"labels_{candidate.pk}", "").split()
        if labels:
            payload.setdefault("sentence_labels", {})[str(candidate.pk)] = labels
    return payload


def _gold_rows(item: Item) -> list[dict]:
    """Each response of an item with its expected values (prefilled into the gold form)."""
    payload = item.gold_payload or {}
    rank = {c: i + 1 for i, group in enumerate(payload.get("ranking") or []) for c in group}
    rows = []
    for candidate in item.candidates.all():
        key = str(candidate.pk)
        wrong = (payload.get("first_wrong_step") or {}).get(key)
        labels = (payload.get("sentence_labels") or {}).get(key) or []
        rows.append(
            {
                "c": candidate,
                "rank": rank.get(candidate.pk, ""),
                "wrong": "" if wrong is None else wrong + 1,
                "labels": " ".join(label[0] if label != "not_claim" else "x" for label in labels),
            }
        )
    return rows


@require_GET
@project_member_required(manager=True)
def gold_list(request, project_id):
    project = request.project
    items = project.items.exclude(metadata__has_key="step_proposal").prefetch_related("candidates")
    items = list(items.order_by("-is_gold", "id")[:GOLD_PAGE])
    context = {
        "project": project,
        "items": [(item, _gold_rows(item)) for item in items],
        "gold_count": project.items.filter(is_gold=True).count(),
        "percent": round(100 * project.gold_rate),
    }
    return render(request, "annotation/construction_gold.html", context)


@require_POST
@project_member_required(manager=True)
def gold_rate(request, project_id):
    try:
        percent = float(request.POST.get("gold_percent", ""))
        project_gold_rate_set(project=request.project, rate=percent / 100)
        messages.success(request, f"Gold tasks are now served at {percent:g}%.")
    except (ValueError, ValidationError):
        messages.error(request, "The gold rate is a percentage from 0 to 50.")
    return redirect("gold-list", project_id=project_id)


@require_POST
@project_member_required(manager=True)
def gold_mark(request, project_id, item_id):
    item = get_object_or_404(Item, pk=item_id, project=request.project)
    try:
        if request.POST.get("unmark"):
            item_gold_unmark(item=item)
            messages.success(request, f"Item {item.pk} is no longer gold.")
        else:
            item_gold_mark(item=item, payload=_gold_payload(request.POST, item, request.project.task_type))
            messages.success(request, f"Item {item.pk} is gold.")
    except ValidationError as error:
        messages.error(request, f"Item {item.pk}: {' '.join(error.messages)}")
    return redirect("gold-list", project_id=project_id)


# --- step pipeline ---------------------------------------------------------------------------------


@require_POST
@project_member_required(manager=True)
def step_arithmetic(request, project_id):
    try:
        count, seed = int(request.POST.get("count", "")), int(request.POST.get("seed", "0") or 0)
        added = arithmetic_items_add(project=request.project, count=count, seed=seed)
        messages.success(request, f"Added {len(added)} arithmetic problems.")
    except ValueError:
        messages.error(request, "count and seed are whole numbers.")
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("step-review", project_id=project_id)


@require_POST
@project_member_required(manager=True)
def step_decide(request, project_id, item_id):
    item = get_object_or_404(Item, pk=item_id, project=request.project)
    try:
        step_proposal_review(
            item=item, reviewer=request.user, accept=request.POST.get("decision") == "accept"
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("step-review", project_id=project_id)


# --- agreement for every type ------------------------------------------------------------------------


@require_GET
@project_member_required(manager=True)
def agreement_types(request, project_id):
    context = {"project": request.project, "report": project_type_agreement(project=request.project)}
    return render(request, "annotation/construction_agreement.html", context)


# --- multi-image building (MIA-DPO) ----------------------------------------------------------------


class MultiImageForm(forms.Form):
    source = forms.ModelChoiceField(queryset=None, help_text="Its single-image items are augmented.")
    kinds = forms.MultipleChoiceField(
        choices=[
            ("sequence", "Sequence (2–5 images)"),
            ("grid", "Grid collage"),
            ("pip", "Picture-in-picture"),
        ],
        widget=forms.CheckboxSelectMultiple,
        initial=["sequence", "grid", "pip"],
    )
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)
    limit = forms.IntegerField(min_value=1, max_value=500, initial=50, label="Source items at most")

    def __init__(self, *args, user, **kwargs):
        from ..models import Project, Role

        super().__init__(*args, **kwargs)
        managed = (
            Project.objects.all()
            if user.is_superuser
            else Project.objects.filter(memberships__user=user, memberships__role=Role.MANAGER)
        )
        self.fields["source"].queryset = managed.order_by("name")


@require_http_methods(["GET", "POST"])
@project_member_required(manager=True)
def multi_image_build(request, project_id):
    form = MultiImageForm(request.POST or None, user=request.user)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                items = multi_image_items_build(
                    source=data["source"],
                    target=request.project,
                    kinds=data["kinds"],
                    seed=data["seed"],
                    limit=data["limit"],
                )
                messages.success(request, f"Built {len(items)} multi-image items.")
                return redirect("project-detail", project_id=project_id)
            except ValidationError as error:
                add_validation_error(form, error)
        status = 400
    context = {"project": request.project, "form": form}
    return render(request, "annotation/construction_multi_image.html", context, status=status)
