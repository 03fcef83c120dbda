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

from training.engine import METHODS, ConfigError

from .models import ModelEntry, Queue, TrainingJob
from .selectors import models_for_user
from .services.jobs import FIXED_FIELDS, job_config_build, launch_problems
from .services.paths import new_run_token, run_token_sign, run_token_unsign
from .services.registry import model_kinds_for


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


def form_field(field: dataclasses.Field, help_text: str) -> forms.Field:
    kind, optional = _base_type(field.type)
    initial = field.default if field.default is not dataclasses.MISSING else None
    common = {"help_text": help_text, "initial": initial, "label": field.name}
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


class LaunchForm(forms.Form):
    """Base model, dataset version, queue, then the method's hyperparameters (added per instance)."""

    base_model = forms.ModelChoiceField(
        queryset=ModelEntry.objects.none(), help_text="Model registry entry (the kinds this method trains)."
    )
    dataset_version = forms.ModelChoiceField(
        queryset=None, help_text="Frozen version; its test split is held out."
    )
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.CPU, help_text="Worker queue: cpu or gpu.")
    run_token = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, method: str, project, user, initial_config: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method
        self.fields["base_model"].queryset = models_for_user(user=user, kinds=model_kinds_for(method))
        self.fields["dataset_version"].queryset = project.versions.order_by("-number")
        self.fields["run_token"].initial = run_token_sign(new_run_token())
        self.hyper_names = []
        for name, field in method_fields(method).items():
            if initial_config and name in initial_config:
                field.initial = initial_config[name]
            self.fields[name] = field
            self.hyper_names.append(name)

    def hyper_fields(self):
        return [self[name] for name in self.hyper_names]

    def params(self) -> dict:
        return {"method": self.method, **{name: self.cleaned_data.get(name) for name in self.hyper_names}}

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
        try:
            self.config = job_config_build(
                params=self.params(),
                base_model=base_model,
                dataset_version=version,
                run_token=data["run_token"],
            )
        except ConfigError as exc:
            field, _, message = str(exc).partition(": ")
            self.add_error(
                field if field in self.fields else None, str(exc) if field not in self.fields else message
            )
        problems = launch_problems(
            method=self.method, base_model=base_model, dataset_version=version, queue=data["queue"]
        )
        for field, message in problems.items():
            self.add_error(field if field in self.fields else None, message)
        return data
