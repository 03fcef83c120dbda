"""PPO vs DPO on one dataset version ("Unpacking DPO and PPO"): the base model, a DPO-family model trained
on the version's pairs and a PPO-family model (``ppo`` or ``rto``) trained on its prompts answer the
version's held-out prompts greedily; a reward model scores every response (``engine.lm.policy_eval``).

Both jobs must have trained on the chosen version: its held-out rows are then unseen by both (a job on
another version of the project may have trained on them), and "one dataset version" is what the
comparison claims.  Both must start from the same base model: it is the baseline of the win rates and the
reference of the KL, and a model's KL to another model than its own start means nothing.  The reward model
defaults to the PPO job's own; its tokenizer must be the base's (checked by the job, which loads them).
Responses run to the PPO job's ``max_new_tokens`` (a setting), prompts over its ``max_prompt_length`` are
dropped, as the PPO run dropped them.

A ``GenerationJob`` of kind ``policy_comparison`` (generation queue, job core lease) runs it and stores
the engine's summary and example rows on a ``PolicyComparison`` row with its provenance.
"""

import json

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import DatasetVersion
from annotation.services.versions import version_rows
from jobs.leases import Lease
from jobs.models import JobState
from jobs.sending import job_send_on_commit

from ..generation_stages import RUNNING
from ..models import GenerationJob, GenerationKind, ModelEntry, ModelKind, PolicyComparison, TrainingJob
from ..selectors import models_for_user
from .reward_comparison import is_dpo_family

BATCH_SIZE = 8
EXAMPLES = 6
"""Prompts whose three responses the page shows."""
MAX_NEW_TOKENS = 512


def is_ppo_family(method: str) -> bool:
    """Whether ``method`` trains a causal LM with PPO against a reward model (``ppo``, ``rto``)."""
    from training.engine.methods import METHODS
    from training.engine.recipes.ppo import PPOConfig

    entry = METHODS.get(method)
    return entry is not None and issubclass(entry.config, PPOConfig)


def heldout_prompts(*, version: DatasetVersion, split: str = "test") -> list:
    """The distinct prompts of the version's ``split`` rows, in index order."""
    prompts = {}
    for _, row in version_rows(version=version, split=split):
        if "prompt" in row:
            prompts.setdefault(json.dumps(row["prompt"], sort_keys=True), row["prompt"])
    return list(prompts.values())


def _job_problem(job: TrainingJob | None, version: DatasetVersion, *, family: str, check) -> str | None:
    if job is None:
        return f"Choose a finished {family} training job."
    if job.dataset_version.project_id != version.project_id:
        return "No such job in this project."
    if not check(job.method):
        return f"Job {job.pk} trained {job.method}, not a {family} method."
    if job.dataset_version_id != version.pk:
        return (
            f"Job {job.pk} trained on v{job.dataset_version.number}, not v{version.number}: both jobs must "
            "train on the compared version, so that its held-out prompts are unseen by both."
        )
    if job.state != JobState.SUCCEEDED:
        return f"Job {job.pk} has not succeeded ({job.get_state_display().lower()})."
    model = getattr(job, "produced_model", None)
    if model is None or model.kind != ModelKind.CAUSAL_LM:
        return f"Job {job.pk} registered no trained model."
    return None


def _reward_problem(model: ModelEntry, user) -> str | None:
    if not models_for_user(user=user).filter(pk=model.pk).exists():
        return "No such model among those you can use."
    if model.kind != ModelKind.REWARD_MODEL:
        return f"{model.name} is a {model.get_kind_display()}, not a reward model."
    return None


def default_reward_model(*, ppo_job: TrainingJob, user) -> ModelEntry | None:
    """The registry's reward-model entry the PPO job trained against (None when it is not registered or
    ``user`` cannot use it)."""
    spec = (ppo_job.config or {}).get("reward_model")
    entries = models_for_user(user=user, kinds=[ModelKind.REWARD_MODEL])
    return next((entry for entry in entries if entry.spec == spec), None)


def _problems(version, dpo_job, ppo_job, reward_model, user) -> tuple[dict, ModelEntry | None]:
    errors = {}
    if problem := _job_problem(dpo_job, version, family="DPO-family", check=is_dpo_family):
        errors["dpo_job"] = problem
    if problem := _job_problem(ppo_job, version, family="PPO-family", check=is_ppo_family):
        errors["ppo_job"] = problem
    if not errors and dpo_job.base_model.spec != ppo_job.base_model.spec:
        errors["ppo_job"] = (
            f"Job {ppo_job.pk} started from {ppo_job.base_model.name}, the DPO job from "
            f"{dpo_job.base_model.name}: the win rates and KL need one base model for both."
        )
    if reward_model is None and "ppo_job" not in errors and ppo_job is not None:
        reward_model = default_reward_model(ppo_job=ppo_job, user=user)
        if reward_model is None:
            errors["reward_model"] = "The PPO job's reward model is not in the registry: choose one."
    if reward_model is not None and (problem := _reward_problem(reward_model, user)):
        errors["reward_model"] = problem
    return errors, reward_model


def _provenance(dpo_job, ppo_job, reward_model, max_new_tokens) -> dict:
    def model(entry: ModelEntry) -> dict:
        return {"name": entry.name, "spec": entry.spec}

    return {
        "base": model(dpo_job.base_model),
        "dpo": {**model(dpo_job.produced_model), "method": dpo_job.method},
        "ppo": {**model(ppo_job.produced_model), "method": ppo_job.method},
        "reward_model": model(reward_model),
        "max_new_tokens": max_new_tokens,
        "stop_at_eos": bool(ppo_job.config.get("stop_at_eos", True)),
        "max_prompt_length": ppo_job.config.get("max_prompt_length"),
        "decoding": "greedy",
    }


def policy_comparison_create(
    *,
    version: DatasetVersion,
    dpo_job: TrainingJob | None,
    ppo_job: TrainingJob | None,
    reward_model: ModelEntry | None,
    created_by,
    max_new_tokens: int | None = None,
    split: str = "test",
) -> PolicyComparison:
    """Queue the comparison; a ValidationError names the field (``dpo_job``, ``ppo_job``,
    ``reward_model``, ``max_new_tokens``, or the whole form when the version has no held-out prompt)."""
    errors, reward_model = _problems(version, dpo_job, ppo_job, reward_model, created_by)
    if max_new_tokens is not None and not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        errors["max_new_tokens"] = f"Must lie in 1…{MAX_NEW_TOKENS}, got {max_new_tokens}."
    if errors:
        raise ValidationError(errors)
    if not heldout_prompts(version=version, split=split):
        raise ValidationError(f"Version {version.number} has no {split} prompts to compare on.")
    max_new_tokens = max_new_tokens or int(ppo_job.config.get("max_new_tokens", 32))
    with transaction.atomic():
        job = GenerationJob.objects.create(
            project=version.project,
            kind=GenerationKind.POLICY_COMPARISON,
            model=reward_model,
            model_spec=reward_model.spec,
            options={"batch_size": BATCH_SIZE, "examples": EXAMPLES},
            created_by=created_by,
        )
        comparison = PolicyComparison.objects.create(
            job=job,
            dataset_version=version,
            heldout_split=split,
            dpo_job=dpo_job,
            ppo_job=ppo_job,
            reward_model=reward_model,
            provenance=_provenance(dpo_job, ppo_job, reward_model, max_new_tokens),
        )
    from .generation import GENERATION_JOBS

    job_send_on_commit(GENERATION_JOBS, job.pk)
    return comparison


def engine_policy_comparison(comparison: PolicyComparison, prompts: list, between_batches) -> dict:
    """Load the four models and run the engine's comparison (imports torch)."""
    from training.engine.lm.models import load_model, load_tokenizer
    from training.engine.lm.policy_eval import compare_policies, same_vocabulary
    from training.engine.lm.rewards import load_reward_model

    prov = comparison.provenance
    tokenizer = load_tokenizer(prov["base"]["spec"])
    same_vocabulary(tokenizer, {name: load_tokenizer(prov[name]["spec"]) for name in ("dpo", "ppo")})
    same_vocabulary(tokenizer, {"reward_model": load_tokenizer(prov["reward_model"]["spec"])})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    options = comparison.job.options
    return compare_policies(
        prompts,
        tokenizer=tokenizer,
        base=load_model(prov["base"]["spec"]),
        policies={name: load_model(prov[name]["spec"]) for name in ("dpo", "ppo")},
        reward_model=load_reward_model(prov["reward_model"]["spec"], pad_token_id=pad),
        max_new_tokens=prov["max_new_tokens"],
        stop_at_eos=prov["stop_at_eos"],
        max_prompt_length=prov["max_prompt_length"],
        batch_size=options.get("batch_size", BATCH_SIZE),
        examples=options.get("examples", EXAMPLES),
        between_batches=between_batches,
    )


def policy_comparison_job_body(*, job: GenerationJob, lease: Lease) -> dict:
    """The job body for kind ``policy_comparison`` (``generation_job_run`` calls it): progress counts
    generation batches (three models) and renews the lease before each, so a cancel stops the job
    between two batches (LeaseLost)."""
    comparison = PolicyComparison.objects.select_related("dataset_version").get(job=job)
    prompts = heldout_prompts(version=comparison.dataset_version, split=comparison.heldout_split)
    size = job.options.get("batch_size", BATCH_SIZE)
    total = 3 * -(-len(prompts) // size)  # an upper bound when prompts too long are dropped
    progress = {"done": 0}

    def between_batches() -> None:
        lease.renew(stage=RUNNING, progress_done=progress["done"], progress_total=total)
        progress["done"] += 1

    lease.renew(progress_done=0, progress_total=total)
    result = engine_policy_comparison(comparison, prompts, between_batches)
    PolicyComparison.objects.filter(pk=comparison.pk).update(result=result)
    return {"comparison": comparison.pk, "prompts": result["prompts"]}
