"""DPO implicit reward vs an explicit reward model under a distribution shift (Lin et al.'s DPORM vs EXRM).

A user picks a dataset version, a finished DPO-family job (its implicit reward β·(log π_θ − log π_ref),
the reference being the job's base model and β its config's), a reward-model entry and a shift rule
(``training.engine.lm.shift``).  The version's held-out rows are cut by the rule into in-distribution and
shifted, and a job (``GenerationJob`` of kind ``reward_comparison``, on the generation queue and the job
core's lease) scores both splits with both models (``engine.lm.reward_comparison``) and stores the
accuracies on a ``RewardComparison`` row with its provenance.

Frozen rows hold prompt, chosen and rejected but not their item's ``source`` or ``metadata``; a rule by
source or metadata reads them from the version's project items, matched by prompt.  A prompt shared by
items that disagree on the field is left without it, and the rule then names that row.
"""

import json
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import DatasetVersion, Item
from annotation.services.versions import version_rows
from jobs.leases import Lease
from jobs.models import JobState
from jobs.sending import job_send_on_commit
from training.engine.lm.shift import ShiftRule, split_by_shift
from training.engine.recipes.dpo_configs import PreferenceConfig

from ..generation_stages import RUNNING
from ..models import GenerationJob, GenerationKind, ModelEntry, ModelKind, RewardComparison, TrainingJob
from ..selectors import models_for_user
from .scoring import trained_max_length

BATCH_SIZE = 8
RULE_FIELDS = {
    "kind": "rule_kind",
    "values": "values",
    "key": "key",
    "threshold": "threshold",
    "unit": "unit",
}
"""Shift-rule fields → the form fields that set them; a row-level problem is the rule's kind."""


def is_dpo_family(method: str) -> bool:
    """Whether ``method`` trains a causal LM on a DPO-family objective (it has an implicit reward)."""
    from training.engine.methods import METHODS

    entry = METHODS.get(method)
    return entry is not None and issubclass(entry.config, PreferenceConfig)


def _prompt_key(prompt: Any) -> str:
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]  # the shape make_conversational gives a text prompt
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _item_fields(project) -> dict[str, dict]:
    """Prompt key → ``{"source", "metadata"}`` of the project's items; a prompt whose items disagree keeps
    only the fields they agree on."""
    found: dict[str, dict] = {}
    items = Item.objects.filter(project=project).values_list("prompt", "messages", "source", "metadata")
    for prompt, messages, source, metadata in items.iterator(chunk_size=2000):
        key = _prompt_key(messages or prompt)
        fields = {"source": source, "metadata": metadata or {}}
        if key not in found:
            found[key] = fields
            continue
        found[key] = {k: v for k, v in found[key].items() if fields.get(k) == v}
    return found


def heldout_rows(*, version: DatasetVersion, split: str = "test") -> list[dict]:
    """The version's rows of ``split``, each with its item's ``source`` and ``metadata`` added where the
    row lacks them and its prompt identifies them."""
    by_prompt = _item_fields(version.project)
    rows = []
    for _, row in version_rows(version=version, split=split):
        extra = by_prompt.get(_prompt_key(row.get("prompt", "")), {})
        rows.append({**extra, **row})
    return rows


MATCH_NOTE = (
    " (a frozen row gets its item's source and metadata by its prompt; a prompt shared by items that"
    " disagree on them gets neither)"
)


def _rule_error(error: ValueError) -> ValidationError:
    """The engine's "field: message" as a ValidationError on the form field that sets it."""
    field, _, message = str(error).partition(": ")
    if field in ("source", "metadata"):
        message += MATCH_NOTE
    return ValidationError({RULE_FIELDS.get(field, "rule_kind"): message or str(error)})


def rule_check(*, rule: ShiftRule, rows: list[dict]) -> None:
    """Raise a ValidationError naming the field when ``rule`` cannot split ``rows`` (a token-length rule
    is checked by the job, which has the tokenizer)."""
    if rule.kind == "prompt_length" and rule.unit == "tokens":
        return
    try:
        split_by_shift(rows, rule)
    except ValueError as error:
        raise _rule_error(error) from error


def _policy_problem(job: TrainingJob | None, version: DatasetVersion) -> str | None:
    if job is None:
        return "Choose a finished DPO-family training job."
    if job.dataset_version.project_id != version.project_id:
        return "No such job in this project."
    if not is_dpo_family(job.method):
        return f"Job {job.pk} trained {job.method}, which has no DPO implicit reward."
    if job.state != JobState.SUCCEEDED:
        return f"Job {job.pk} has not succeeded ({job.get_state_display().lower()})."
    model = getattr(job, "produced_model", None)
    if model is None or model.kind != ModelKind.CAUSAL_LM:
        return f"Job {job.pk} registered no trained model."
    return None


def _reward_problem(model: ModelEntry | None, user) -> str | None:
    if model is None:
        return "Choose a reward model."
    if not models_for_user(user=user).filter(pk=model.pk).exists():
        return "No such model among those you can use."
    if model.kind != ModelKind.REWARD_MODEL:
        return f"{model.name} is a {model.get_kind_display()}, not a reward model."
    return None


def _provenance(policy_job: TrainingJob, reward_model: ModelEntry) -> dict:
    policy = policy_job.produced_model
    return {
        "policy": {
            "name": policy.name,
            "spec": policy.spec,
            "max_length": policy_job.config.get("max_length"),
        },
        "reference": {"name": policy_job.base_model.name, "spec": policy_job.base_model.spec},
        "method": policy_job.method,
        "reward_model": {
            "name": reward_model.name,
            "spec": reward_model.spec,
            "max_length": trained_max_length(reward_model),
        },
    }


def reward_comparison_create(
    *,
    version: DatasetVersion,
    policy_job: TrainingJob | None,
    reward_model: ModelEntry | None,
    rule: ShiftRule,
    created_by,
    split: str = "test",
) -> RewardComparison:
    """Queue the comparison; a ValidationError names the field (``policy_job``, ``reward_model``, a rule
    field, or the whole form when the version has no held-out rows)."""
    errors = {}
    if problem := _policy_problem(policy_job, version):
        errors["policy_job"] = problem
    if problem := _reward_problem(reward_model, created_by):
        errors["reward_model"] = problem
    if errors:
        raise ValidationError(errors)
    rows = heldout_rows(version=version, split=split)
    if not rows:
        raise ValidationError(f"Version {version.number} has no {split} rows to compare on.")
    rule_check(rule=rule, rows=rows)
    with transaction.atomic():
        job = GenerationJob.objects.create(
            project=version.project,
            kind=GenerationKind.REWARD_COMPARISON,
            model=reward_model,
            model_spec=reward_model.spec,
            options={"batch_size": BATCH_SIZE},
            created_by=created_by,
        )
        comparison = RewardComparison.objects.create(
            job=job,
            dataset_version=version,
            heldout_split=split,
            policy_job=policy_job,
            reward_model=reward_model,
            rule=rule.to_dict(),
            beta=float(policy_job.config.get("beta", 0.1)),
            provenance=_provenance(policy_job, reward_model),
        )
    from .generation import GENERATION_JOBS

    job_send_on_commit(GENERATION_JOBS, job.pk)
    return comparison


def engine_comparison(comparison: RewardComparison, splits: Callable, between_batches: Callable) -> dict:
    """Load the three models and run the engine's comparison (imports torch); ``splits(tokenizer)``
    gives the rows of each split."""
    from training.engine.lm.models import load_model, load_tokenizer
    from training.engine.lm.reward_comparison import ScoredSide, compare_on_splits
    from training.engine.lm.rewards import load_reward_model

    prov = comparison.provenance
    tokenizer = load_tokenizer(prov["policy"]["spec"])
    rm_tokenizer = load_tokenizer(prov["reward_model"]["spec"])
    pad = rm_tokenizer.pad_token_id if rm_tokenizer.pad_token_id is not None else 0
    return compare_on_splits(
        splits(tokenizer),
        policy=ScoredSide(load_model(prov["policy"]["spec"]), tokenizer, prov["policy"]["max_length"]),
        reference=load_model(prov["reference"]["spec"]),
        beta=comparison.beta,
        reward_model=ScoredSide(
            load_reward_model(prov["reward_model"]["spec"], pad_token_id=pad),
            rm_tokenizer,
            prov["reward_model"]["max_length"],
        ),
        batch_size=comparison.job.options.get("batch_size", BATCH_SIZE),
        between_batches=between_batches,
    )


def _batches(n: int) -> int:
    return -(-n // BATCH_SIZE)


def reward_comparison_job_body(*, job: GenerationJob, lease: Lease) -> dict:
    """The job body for kind ``reward_comparison`` (``generation_job_run`` calls it): progress counts
    batches (three passes a split: policy, reference, reward model) and renews the lease before each, so
    a cancel stops the job between two batches (LeaseLost)."""
    comparison = RewardComparison.objects.select_related("dataset_version__project").get(job=job)
    rule = ShiftRule.from_dict(comparison.rule)
    rows = heldout_rows(version=comparison.dataset_version, split=comparison.heldout_split)
    cut = {}

    def splits(tokenizer) -> dict[str, list[dict]]:
        split = split_by_shift(rows, rule, tokenizer=tokenizer)
        cut.update(in_distribution=split.in_distribution, shifted=split.shifted)
        return dict(cut)

    progress = {"done": 0}

    def between_batches() -> None:
        total = 3 * sum(_batches(len(r)) for r in cut.values())
        lease.renew(stage=RUNNING, progress_done=progress["done"], progress_total=total)
        progress["done"] += 1

    lease.renew(progress_done=0, progress_total=0)
    result = engine_comparison(comparison, splits, between_batches)
    RewardComparison.objects.filter(pk=comparison.pk).update(result=result)
    return {
        "comparison": comparison.pk,
        **{name: result[name]["n"] for name in ("in_distribution", "shifted")},
    }
