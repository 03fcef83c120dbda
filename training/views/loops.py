"""Online loops: the form that starts one, the list of a project's loops, and each loop's page (its rounds as
a timeline, charts across rounds, each round's held-out examples), polled while it runs.  Members see the
loops; managers start, cancel and resume them (``services/loops.py``)."""

from contextlib import suppress

from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.access import project_member_required
from annotation.forms import add_validation_error
from annotation.models import DatasetVersion, TaskType
from jobs.pages import job_page

from ..loop_charts import loop_chart_data, round_rows
from ..models import Labeller, Loop, ModelKind
from ..selectors import loops_for_project, models_for_user
from ..services.loops import TRAIN_METHODS, loop_cancel, loop_create, loop_resume
from .policy_comparison import prompt_text

SETTING_FIELDS = ("rounds", "patience", "k", "temperature", "max_new_tokens", "max_prompts", "eval_prompts")
PAIR_FIELDS = ("pair_rule", "gap", "rso_accept", "rso_beta", "min_judgments", "min_votes")
TRAIN_FIELDS = ("method", "learning_rate", "epochs", "max_steps", "batch_size")


class LoopForm(forms.Form):
    name = forms.CharField(max_length=200)
    prompt_version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(),
        label="Prompts",
        help_text="Each round samples its training prompts and is evaluated on its held-out prompts.",
    )
    start_model = forms.ModelChoiceField(queryset=None, label="Starting policy")
    reward_model = forms.ModelChoiceField(
        queryset=None,
        label="Reward model",
        help_text="Labels every round (CREAM: the policy labels itself, the reward model scores its rounds).",
    )
    labeller = forms.ChoiceField(choices=Labeller.choices)
    rounds = forms.IntegerField(min_value=1, max_value=20, initial=3)
    patience = forms.IntegerField(
        min_value=0,
        max_value=20,
        required=False,
        help_text="Stop after this many rounds without a better held-out score (empty or 0: never).",
    )
    k = forms.IntegerField(
        min_value=2,
        max_value=256,
        required=False,
        label="Samples per prompt",
        help_text="Empty: 4 (RSO: 64, CREAM: 5, people: 2).",
    )
    temperature = forms.FloatField(min_value=0.01, max_value=2, required=False, help_text="Empty: 1.0.")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=1024, required=False, help_text="Empty: 64.")
    max_prompts = forms.IntegerField(
        min_value=1, max_value=5000, required=False, label="Prompts per round", help_text="Empty: 64."
    )
    eval_prompts = forms.IntegerField(
        min_value=1, max_value=1000, required=False, label="Held-out prompts", help_text="Empty: 32."
    )
    pair_rule = forms.ChoiceField(
        choices=[
            ("", "the labeller's (best vs worst; RSO: rejection sampling; CREAM: its own ranking)"),
            ("best_worst", "best vs worst"),
            ("gap", "every pair above a score gap"),
            ("sampled_pairs", "samples paired as drawn, labelled by score"),
            ("rso", "RSO rejection sampling"),
            ("implicit_best_worst", "CREAM: best vs worst by the policy's own implicit reward"),
            ("annotators", "people: the annotators' judgments"),
        ],
        required=False,
        label="Pair rule",
    )
    gap = forms.FloatField(required=False, help_text="Gap rule: the smallest score difference a pair needs.")
    rso_accept = forms.IntegerField(required=False, label="RSO: accepted per prompt", help_text="Empty: 8.")
    rso_beta = forms.FloatField(required=False, label="RSO: β", help_text="Empty: 0.5.")
    min_judgments = forms.IntegerField(
        min_value=0,
        required=False,
        label="People: continue after",
        help_text="Judgments a round waits for before it trains. Empty or 0: one per task it posts.",
    )
    min_votes = forms.IntegerField(
        min_value=1, max_value=100, required=False, label="People: votes per task", help_text="Empty: 1."
    )
    reference = forms.ChoiceField(
        choices=[
            ("", "the round's policy (iterative DPO)"),
            ("start", "the starting policy, every round"),
        ],
        required=False,
        label="DPO reference",
    )
    method = forms.ChoiceField(
        choices=[("", "the labeller's (DPO; RSO: sigmoid-norm; CREAM: cream)")]
        + [(m, m) for m in sorted({m for methods in TRAIN_METHODS.values() for m in methods})],
        required=False,
        label="Training method",
    )
    learning_rate = forms.FloatField(required=False, help_text="Empty: 5e-5 (LoRA).")
    epochs = forms.IntegerField(
        min_value=1, required=False, help_text="Passes over a round's pairs. Empty: 1."
    )
    max_steps = forms.IntegerField(
        min_value=1, required=False, help_text="At most this many optimizer steps. Empty: the epochs decide."
    )
    batch_size = forms.IntegerField(min_value=1, max_value=512, required=False, help_text="Empty: 4.")

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prompt_version"].queryset = DatasetVersion.objects.filter(project=project).order_by(
            "-number"
        )
        self.fields["prompt_version"].label_from_instance = lambda v: (
            f"v{v.number} · {v.stats.get('examples', '?')} rows"
        )
        self.fields["start_model"].queryset = models_for_user(user=user, kinds=[ModelKind.CAUSAL_LM])
        self.fields["reward_model"].queryset = models_for_user(user=user, kinds=[ModelKind.REWARD_MODEL])

    def groups(self) -> list[tuple[str, list]]:
        """The form's fields under their headings, as the page shows them."""
        headings = (
            (
                "Loop",
                ("name", "prompt_version", "start_model", "reward_model", "labeller") + SETTING_FIELDS[:2],
            ),
            ("Sampling and pairing", SETTING_FIELDS[2:] + PAIR_FIELDS),
            ("Training each round", ("reference",) + TRAIN_FIELDS),
        )
        return [(heading, [self[name] for name in names]) for heading, names in headings]

    def loop_settings(self) -> dict:
        """The settings the form was given (the labeller's defaults fill the rest)."""
        data = self.cleaned_data
        given = {
            name: data[name]
            for name in SETTING_FIELDS + PAIR_FIELDS + ("reference",)
            if data.get(name) not in (None, "")
        }
        train = {name: data[name] for name in TRAIN_FIELDS if data.get(name) not in (None, "")}
        return {**given, "train": train} if train else given


def _page(request, form, status=200):
    context = {
        "project": request.project,
        "form": form,
        "loops": loops_for_project(project=request.project),
        "is_manager": request.project_role == "manager",
        "text_project": request.project.task_type in (TaskType.PAIRWISE, TaskType.RANKING),
    }
    return render(request, "training/loop_list.html", context, status=status)


@require_GET
@project_member_required()
def loop_list(request, project_id):
    return _page(request, LoopForm(user=request.user, project=request.project, initial={"rounds": 3}))


@require_POST
@project_member_required(manager=True)
def loop_start(request, project_id):
    form = LoopForm(request.POST, user=request.user, project=request.project)
    loop = None
    if form.is_valid():
        try:
            loop = loop_create(
                name=form.cleaned_data["name"],
                prompt_version=form.cleaned_data["prompt_version"],
                start_model=form.cleaned_data["start_model"],
                reward_model=form.cleaned_data["reward_model"],
                labeller=form.cleaned_data["labeller"],
                settings=form.loop_settings(),
                created_by=request.user,
            )
        except ValidationError as error:
            add_validation_error(form, _form_fields(error))
    if loop is None:
        return _page(request, form, status=400)
    return redirect("loop-detail", project_id=project_id, loop_id=loop.pk)


def _form_fields(error: ValidationError) -> ValidationError:
    """The service names training settings ``train.<field>``; the form has them as ``<field>``."""
    if not hasattr(error, "error_dict"):
        return error
    return ValidationError(
        {name.removeprefix("train."): messages for name, messages in error.message_dict.items()}
    )


def _loop(request, loop_id) -> Loop:
    return get_object_or_404(
        Loop.objects.select_related("start_model", "reward_model", "prompt_version"),
        pk=loop_id,
        project=request.project,
    )


@require_GET
@project_member_required()
def loop_detail(request, project_id, loop_id):
    loop = _loop(request, loop_id)
    rounds = list(
        loop.rounds.select_related("policy", "dataset_version", "training_job", "trained_model").order_by(
            "number"
        )
    )
    examples = [
        {"round": r.number, "prompt": prompt_text(e.get("prompt", "")), **e}
        for r in rounds
        for e in (r.evaluation or {}).get("examples", [])
    ]
    context = {
        "project": request.project,
        "loop": loop,
        "rows": round_rows(loop, rounds),
        "charts": loop_chart_data(loop, rounds),
        "examples": examples,
        "is_manager": request.project_role == "manager",
        "percent": round(100 * loop.progress_done / loop.progress_total) if loop.progress_total else 0,
    }
    return job_page(request, "training/loop_detail.html", "loop-status", context, finished=loop.finished)


@require_POST
@project_member_required(manager=True)
def loop_cancel_view(request, project_id, loop_id):
    loop_cancel(loop=_loop(request, loop_id))
    return redirect("loop-detail", project_id=project_id, loop_id=loop_id)


@require_POST
@project_member_required(manager=True)
def loop_resume_view(request, project_id, loop_id):
    with suppress(ValidationError):  # not cancelled or failed (a second click): its page says what it does
        loop_resume(loop=_loop(request, loop_id))
    return redirect("loop-detail", project_id=project_id, loop_id=loop_id)
