"""The launch form, generated from the engine's config dataclass of the chosen method.

Each dataclass field becomes a form field with its docstring as help text and its default as the
initial value; the form validates by building the engine config (``ConfigError`` lands on the field).
"""

import ast
import dataclasses
import functools
import inspect
import json
import types
import typing

from django import forms
from django.core.exceptions import ValidationError

from training.engine import FSDP_WRAPS, METHODS, SHARDINGS, STRATEGIES, ConfigError

from .form_layout import GROUPS, field_group, field_label
from .form_layout import help_text as plain_help
from .models import ModelEntry, Queue, TrainingJob
from .selectors import models_for_user
from .services.jobs import (
    EVAL_GENERATIONS,
    FIXED_FIELDS,
    MAX_EVAL_GENERATIONS,
    job_plan_build,
    launch_problems,
)
from .services.paths import new_run_token, run_token_sign, run_token_unsign
from .services.prompt_sources import LIST, MAX_PROMPTS, SOURCES, VERSION, prompt_source_initial
from .services.registry import model_kinds_for
from .services.rlhf import (
    DPO_REF,
    OPTIONAL_REFS,
    method_samples_policy,
    model_ref_choices,
    model_ref_fields,
    model_ref_ids,
)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _base_type(annotation) -> tuple[type, bool]:
    """``(type, optional)`` of a field annotation like ``int | None``."""
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing))  # noqa: S307
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return (typing.get_origin(hint) or hint), False


class TupleField(forms.CharField):
    """Comma-separated strings ↔ tuple (``lora_target_modules``)."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, (list, tuple)) else value

    def to_python(self, value):
        return tuple(part.strip() for part in (value or "").split(",") if part.strip())


class JsonListField(forms.CharField):
    """A JSON list (``extra_losses``)."""

    def prepare_value(self, value):
        return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value

    def to_python(self, value):
        try:
            parsed = json.loads(value or "[]")
        except json.JSONDecodeError as exc:
            raise ValidationError(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(parsed, list):
            raise ValidationError("expected a JSON list of {name, weight, params} objects")
        return tuple(parsed)


FIELD_CHOICES = {
    "lr_scheduler": ("constant", "linear", "cosine"),
    "precision": ("fp32", "bf16"),
    "strategy": STRATEGIES,
    "fsdp_sharding": SHARDINGS,
    "fsdp_wrap": FSDP_WRAPS,
    "device": ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3"),
}
"""Config fields with a closed set of values: a select, not free text (the config still validates)."""


def form_field(field: dataclasses.Field, help_text: str) -> forms.Field:
    kind, optional = _base_type(field.type)
    initial = field.default if field.default is not dataclasses.MISSING else None
    common = {"help_text": plain_help(help_text), "initial": initial, "label": field_label(field.name)}
    if field.name in FIELD_CHOICES:
        return forms.ChoiceField(choices=[(v, v) for v in FIELD_CHOICES[field.name]], **common)
    if kind is bool:
        return forms.BooleanField(required=False, **common)
    if kind is int:
        return forms.IntegerField(required=not optional, **common)
    if kind is float:
        return forms.FloatField(required=not optional, **common)
    if field.name == "extra_losses":
        return JsonListField(required=False, widget=forms.Textarea(attrs={"rows": 2}), **common)
    if kind is tuple:
        return TupleField(required=False, **common)
    return forms.CharField(required=not optional, **common)


def method_fields(method: str) -> dict[str, forms.Field]:
    cls = METHODS[method].config
    docs = field_docs(cls)
    return {
        f.name: form_field(f, docs.get(f.name, ""))
        for f in dataclasses.fields(cls)
        if f.name not in FIXED_FIELDS
    }


REF_HELP = {
    "reward_model": "Reward model that scores each response: a reward-model entry (a finished reward_model "
    "job's, or one an admin registered).",
    "value_model": "Reward model the value model starts from; empty = a copy of the reward model.",
    DPO_REF: "Model of a finished DPO-family job: its implicit reward scores every token. Its reference "
    "(that job's base model) is set from the job.",
    "reference_model": "The model whose log-probs are the reference; empty = the base model's own starting "
    "weights (it must share the base model's tokenizer).",
}
REF_REFUSED = {
    "reward_model": "Choose one of the reward models offered (a reward-model entry you can use).",
    "value_model": "Choose one of the reward models offered, or leave it empty.",
    DPO_REF: "Choose one of the models offered: those of finished DPO-family jobs of your projects.",
    "reference_model": "Choose one of the language models offered, or leave it empty.",
}
EMPTY_LABELS = {"value_model": "same as the reward model", "reference_model": "the base model's own weights"}


def dpo_model_label(entry: ModelEntry) -> str:
    job = entry.produced_by
    return f"{entry.name} · {job.method} job {job.pk} · reference {job.base_model.name}"


def model_ref_field(name: str, *, user) -> forms.ModelChoiceField:
    """A choice of registry entries for a config field that names a model (never a typed path)."""
    field = forms.ModelChoiceField(
        queryset=model_ref_choices(field=name, user=user),
        required=name not in OPTIONAL_REFS,
        empty_label=EMPTY_LABELS.get(name, "---------"),
        label=field_label(name),
        help_text=REF_HELP[name],
        error_messages={"invalid_choice": REF_REFUSED[name]},
    )
    if name == DPO_REF:
        field.label_from_instance = dpo_model_label
    return field


def prompt_source_fields() -> dict[str, forms.Field]:
    """Where a PPO/RTO job's training prompts come from (held-out prompts are the version's test split)."""
    return {
        "prompt_source": forms.ChoiceField(
            choices=list(SOURCES.items()),
            initial=VERSION,
            label="prompt_source",
            help_text="The prompts the policy samples responses to; every source evaluates on the version's "
            "held-out prompts.",
        ),
        "prompt_list": forms.CharField(
            required=False,
            strip=False,
            widget=forms.Textarea(attrs={"rows": 5}),
            label="prompt_list",
            help_text="With 'a list of prompts': one prompt per line, or a JSON object with a prompt "
            f"per line (chat messages allowed); at most {MAX_PROMPTS}.",
        ),
    }


class LaunchForm(forms.Form):
    """Base model, dataset version, queue, then the method's hyperparameters (added per instance)."""

    base_model = forms.ModelChoiceField(
        queryset=ModelEntry.objects.none(), help_text="Model registry entry (the kinds this method trains)."
    )
    dataset_version = forms.ModelChoiceField(
        queryset=None, help_text="Frozen version; its test split is held out."
    )
    queue = forms.ChoiceField(
        choices=Queue.choices,
        initial=Queue.CPU,
        help_text="Worker queue: cpu or gpu; or slurm: the job page then offers an sbatch script that "
        "runs it on a Slurm cluster, reporting to the job.",
    )
    eval_generations = forms.IntegerField(
        min_value=0,
        max_value=MAX_EVAL_GENERATIONS,
        initial=EVAL_GENERATIONS,
        required=False,
        label="Held-out generations after training",
        help_text="When the job ends, the base and the trained model each answer this many held-out prompts "
        "for the evaluation page (a few minutes for the bundled model on CPU); 0 skips them.",
    )
    run_token = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, method: str, project, user, initial_config: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.user = method, user
        self.fields["base_model"].queryset = models_for_user(user=user, kinds=model_kinds_for(method))
        self.fields["dataset_version"].queryset = project.versions.order_by("-number")
        self.fields["run_token"].initial = run_token_sign(new_run_token())
        self.hyper_names, self.model_names = [], list(model_ref_fields(method))
        self.source_names, self.source = [], None
        if method_samples_policy(method):
            source_initial = prompt_source_initial(initial_config or {})
            for name, field in prompt_source_fields().items():
                field.initial = source_initial.get(name, field.initial)
                self.fields[name] = field
                self.source_names.append(name)
        ref_ids = model_ref_ids(config=initial_config or {})
        for name in self.model_names:
            self.fields[name] = model_ref_field(name, user=user)
            if ref_ids.get(name) is not None:
                self.fields[name].initial = ref_ids[name]
        for name, field in method_fields(method).items():
            if name in self.model_names:
                continue
            if initial_config and name in initial_config:
                field.initial = initial_config[name]
            self.fields[name] = field
            self.hyper_names.append(name)

    def hyper_fields(self):
        return [self[name] for name in self.hyper_names]

    def hyper_groups(self) -> list[tuple[str, list]]:
        """The method's fields under their headings (``form_layout.GROUPS``), empty groups left out; the
        held-out generations setting joins the evaluation group."""
        grouped = {key: [] for key, _ in GROUPS}
        for name in self.hyper_names:
            grouped[field_group(name)].append(self[name])
        grouped["evaluation"].append(self["eval_generations"])
        return [(title, grouped[key]) for key, title in GROUPS if grouped[key]]

    def model_fields(self):
        """The models the method reads besides its base (a PPO job's reward model, …)."""
        return [self[name] for name in self.model_names]

    def prompt_fields(self):
        """Where a PPO/RTO job's prompts come from (none for other methods)."""
        return [self[name] for name in self.source_names]

    def params(self) -> dict:
        names = [*self.model_names, *self.source_names, *self.hyper_names]
        return {"method": self.method, **{name: self.cleaned_data.get(name) for name in names}}

    def clean_run_token(self):
        """The server-made token the form was rendered with; one a job already has is refused."""
        try:
            token = run_token_unsign(self.cleaned_data["run_token"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if TrainingJob.objects.filter(run_token=token).exists():
            raise ValidationError("This form already launched a job; reload it to launch another.")
        return token

    def clean(self):
        data = super().clean()
        if self.errors or not data.get("base_model") or not data.get("dataset_version"):
            return data
        base_model, version = data["base_model"], data["dataset_version"]
        if self.source_names and data.get("prompt_source") != LIST:
            data["prompt_list"] = ""  # a list left in the box is read only with the list source
        try:
            self.config, self.source = job_plan_build(
                params=self.params(),
                base_model=base_model,
                dataset_version=version,
                run_token=data["run_token"],
                user=self.user,
            )
        except ConfigError as exc:
            field, _, message = str(exc).partition(": ")
            self.add_error(
                field if field in self.fields else None, str(exc) if field not in self.fields else message
            )
        problems = launch_problems(
            method=self.method,
            base_model=base_model,
            dataset_version=version,
            queue=data["queue"],
            source=self.source,
        )
        for field, message in problems.items():
            self.add_error(field if field in self.fields else None, message)
        return data
