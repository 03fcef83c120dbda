"""PPO and RTO jobs in the studio: the models they read besides their base, and what their runs write.

A PPO job reads a reward model (and optionally a value model to start from); an RTO job also a finished
DPO model and that model's reference.  Each is a registry entry, never a path from a request: a client
names it by its ModelEntry id (the launch form's choice, the API's integer), and the server puts the
entry's spec in the job config.  RTO's ``dpo_reference`` is set by the server alone, from the DPO job's
base model.

The runs write ``samples/step-N/rollouts.json`` (the latest rollout batch) and ``generations.json``
(greedy held-out generations; step 0 = the base policy); ``policy_rows`` reads either back, keeping only
well-formed rows with bounded text, from file names the server chooses.
"""

import json
import math
from pathlib import Path

from django.db.models import QuerySet

from jobs.models import JobState
from training.engine import METHODS
from training.engine.recipes.ppo import GENERATIONS_FILE, ROLLOUTS_FILE, PPORecipe

from ..models import Location, ModelEntry, ModelKind
from ..selectors import models_for_user, sample_artifacts
from .artifacts import artifact_path
from .registry import model_entry_problem
from .reward_comparison import is_dpo_family

REWARD_REFS = ("reward_model", "value_model")
DPO_REF = "dpo_model"
REFERENCE_REF = "reference_model"
MODEL_REFS = (*REWARD_REFS, DPO_REF, REFERENCE_REF)
"""Config fields that name a model besides the base: a client gives an entry id, the config gets its spec."""
OPTIONAL_REFS = ("value_model", REFERENCE_REF)
NOUNS = {
    "reward_model": "reward model",
    "value_model": "reward model",
    DPO_REF: "DPO model",
    REFERENCE_REF: "language model",
}
MAX_ROWS = 64
MAX_TEXT = 4000


def method_samples_policy(method: str) -> bool:
    """Whether ``method`` trains on the policy's own samples of prompts (PPO and RTO)."""
    return method in METHODS and issubclass(METHODS[method].recipe, PPORecipe)


def model_ref_fields(method: str) -> tuple[str, ...]:
    """The fields of ``method``'s config that name a registry entry (``reward_model``, …)."""
    if method not in METHODS:
        return ()
    fields = METHODS[method].config.__dataclass_fields__
    return tuple(name for name in MODEL_REFS if name in fields)


def _visible(user, kinds) -> QuerySet[ModelEntry]:
    """Entries of ``kinds`` that ``user`` may use; every entry for ``user`` None (the command line)."""
    if user is None:
        return ModelEntry.objects.filter(kind__in=list(kinds)).order_by("location", "name")
    return models_for_user(user=user, kinds=kinds)


def dpo_models_for_user(*, user) -> QuerySet[ModelEntry]:
    """Models registered by finished DPO-family jobs of the user's projects (RTO's token-reward model)."""
    methods = [name for name in METHODS if is_dpo_family(name)]
    return (
        _visible(user, [ModelKind.CAUSAL_LM])
        .filter(produced_by__state=JobState.SUCCEEDED, produced_by__method__in=methods)
        .select_related("produced_by__base_model")
    )


def model_ref_choices(*, field: str, user) -> QuerySet[ModelEntry]:
    """The entries the launch form offers for ``field``."""
    if field == DPO_REF:
        return dpo_models_for_user(user=user)
    if field == REFERENCE_REF:
        return _visible(user, [ModelKind.CAUSAL_LM])
    return _visible(user, [ModelKind.REWARD_MODEL])


def _refused(field: str, pk: int, user) -> str:
    entry = _visible(user, ModelKind.values).filter(pk=pk).first()
    if entry is None:
        return f"No model with id {pk} among those you can use."
    if field == DPO_REF:
        return (
            f"{entry.name} was not trained by a finished DPO-family job: RTO's token reward is the implicit "
            "reward of such a job's model."
        )
    return f"{entry.name} is a {entry.get_kind_display().lower()}, not a {NOUNS[field]}."


def model_ref_entry(*, field: str, value, user) -> tuple[ModelEntry | None, str | None]:
    """``(entry, None)`` for a usable pick of ``field`` (an entry or its id), else ``(None, why)``."""
    if isinstance(value, ModelEntry):
        value = value.pk
    if not isinstance(value, int) or isinstance(value, bool):
        return None, f"Give the id of a registered {NOUNS[field]} (GET /api/jobs/models), not a path or name."
    entry = model_ref_choices(field=field, user=user).filter(pk=value).first()
    if entry is None:
        return None, _refused(field, value, user)
    if problem := model_entry_problem(entry):
        return None, problem
    return entry, None


def model_refs_resolve(*, method: str, params: dict, user) -> tuple[dict, dict[str, str]]:
    """``(config values, problems by field)`` for the entries ``params`` names: each field gets its entry's
    spec, and ``dpo_model`` also sets ``dpo_reference`` to the DPO job's base model."""
    values, problems = {}, {}
    for field in model_ref_fields(method):
        raw = params.get(field)
        if raw in (None, ""):
            if field in OPTIONAL_REFS:
                values[field] = None
            else:
                problems[field] = f"Choose a {NOUNS[field]}."
            continue
        entry, problem = model_ref_entry(field=field, value=raw, user=user)
        if problem:
            problems[field] = problem
            continue
        values[field] = entry.spec
        if field == DPO_REF:
            values["dpo_reference"] = entry.produced_by.base_model.spec
    return values, problems


MODEL_SPEC_FIELDS = ("model", *MODEL_REFS, "dpo_reference")
"""Config fields whose value is a model spec (shown by the model's name, never by its server path)."""


def model_label(spec) -> str:
    """What a page shows for a model spec: the registry name of its entry, the spec itself for a bundled,
    hub or tiny model, and never a server path (an unregistered local folder is only said to be one)."""
    if not spec:
        return "—"
    entry = _entry_of_spec(spec)
    if entry is not None:
        return entry.name
    kind = str(spec).partition(":")[0]
    return str(spec) if kind in ("bundled", "hub", "tiny") else "an unregistered local model"


def model_labels_in(config: dict) -> dict:
    """``config`` with every model-spec field replaced by ``model_label``."""
    return {k: model_label(v) if k in MODEL_SPEC_FIELDS and v else v for k, v in config.items()}


def _entry_of_spec(spec) -> ModelEntry | None:
    kind, _, where = str(spec or "").partition(":")
    locations = {
        "bundled": [Location.BUNDLED],
        "hub": [Location.HUB],
        "local": [Location.LOCAL, Location.JOB],
    }
    if kind not in locations:
        return None
    return ModelEntry.objects.filter(location__in=locations[kind], path=where).order_by("pk").first()


def model_ref_ids(*, config: dict) -> dict[str, int | None]:
    """The entry id behind each model field of a job config (what a client sends back to clone it)."""
    ids = {}
    for field in MODEL_REFS:
        if field in config:
            entry = _entry_of_spec(config[field]) if config[field] else None
            ids[field] = entry.pk if entry else None
    return ids


def version_has_prompts(version) -> bool:
    """Whether the version's training rows hold a prompt to sample responses to."""
    rows = version.examples.filter(split="train", row__has_key="prompt")
    return rows.exclude(row__prompt="").exclude(row__prompt=[]).exists()


# --- what the runs write ---------------------------------------------------------------------------------


def _text(value) -> str:
    if isinstance(value, list):  # a conversation: role: content per message
        value = "\n".join(
            f"{m.get('role', '')}: {m.get('content', '')}" if isinstance(m, dict) else str(m) for m in value
        )
    return str(value if value is not None else "")[:MAX_TEXT]


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _row(row: dict) -> dict:
    length, ended = row.get("length"), row.get("ended")
    return {
        "prompt": _text(row.get("prompt")),
        "response": _text(row.get("response")),
        "score": _number(row.get("score")),
        "kl": _number(row.get("kl")),
        "length": length if isinstance(length, int) and not isinstance(length, bool) else None,
        "ended": ended if isinstance(ended, bool) else None,
    }


def policy_rows(data: dict | None) -> list[dict] | None:
    """The rows of a loaded ``rollouts.json`` or ``generations.json``: ``[{"prompt", "response", "score",
    "kl", "length", "ended"}]``, text as bounded strings, numbers or None; None when there was no file."""
    if data is None:
        return None
    rows = data.get("rows")
    return [_row(row) for row in (rows[:MAX_ROWS] if isinstance(rows, list) else []) if isinstance(row, dict)]


def latest_rollouts(*, job) -> dict | None:
    """The newest rollout table of a PPO/RTO job: ``{"step", "batch", "rows"}``, or None before the first."""
    for step, artifact in reversed(sample_artifacts(job=job).items()):
        data = _load(artifact_path(artifact) / ROLLOUTS_FILE)
        if data is not None:
            batch = data.get("rollout_batch")
            batch = batch if isinstance(batch, int) and not isinstance(batch, bool) else None
            return {"step": step, "batch": batch, "rows": policy_rows(data)}
    return None


def held_out_generations(*, job) -> tuple[tuple[int, list[dict]] | None, tuple[int, list[dict]] | None]:
    """``((0, base rows), (N, trained rows))``: the greedy held-out generations of the base policy and of
    the last evaluation (None where a run wrote none)."""
    found = []
    for step, artifact in sample_artifacts(job=job).items():
        rows = policy_rows(_load(artifact_path(artifact) / GENERATIONS_FILE))
        if rows is not None:
            found.append((step, rows))
    if not found:
        return None, None
    base = found[0] if found[0][0] == 0 else None
    last = found[-1] if found[-1][0] > 0 else None
    return base, last
