"""Online loops: rounds of generate → label → freeze → train → evaluate, the trained model becoming the next
round's policy (``docs/loops.md``).

A ``Loop`` is a job on the job core (its own lease, heartbeat and recovery, ``LOOP_JOBS``); its rounds are
``LoopRound`` rows and each stage's outcome is written before the next stage starts, so an attempt that
dies (a killed worker) is requeued by the recovery and the next attempt resumes at the stage it stopped in:

* ``baseline`` (once): the starting policy's greedy answers to the held-out prompts, scored by the reward
  model: what every round's win rate is measured against.
* ``generate``: K samples per training prompt from the round's policy, scored by the reward model, written
  to the round's ``candidates.json`` (seeded: a rerun draws the same);
* ``label`` and ``freeze``: the pair rule (``engine.lm.online``) turns the scores into rows, frozen as a new
  dataset version of the loop's project whose rule records its provenance (loop, round, labeller, policy,
  reward model), in the transaction that moves the round to ``train``;
* ``train``: a ``TrainingJob`` on that version from the round's policy, created in the transaction that
  links it to the round (one job per round, however often the stage is retried), then run in this worker
  (``training_job_run``: the job's own lease means a copy another worker took over runs only once; the
  loop then waits for it);
* ``evaluate``: the trained model's greedy answers to the held-out prompts: reward-model score, win rate
  against the starting policy, KL to it, mean length.

The loop stops after ``rounds`` rounds, or after ``patience`` rounds without a better held-out score.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.models import DatasetVersion, TaskType
from annotation.services.versions import FreezeError, dataset_version_from_rows
from jobs.leases import Lease, LeaseLost, job_claim
from jobs.models import FINISHED_STATES, JobState
from jobs.recovery import JobKind, seconds_setting, setting
from jobs.sending import job_send_on_commit
from training.engine import ConfigError, config_from_dict

from ..models import Labeller, Loop, LoopRound, LoopStage, ModelEntry, ModelKind, Queue, TrainingJob
from ..selectors import models_for_user
from .jobs import training_job_cancel, training_job_launch
from .paths import artifact_root, new_run_token
from .policy_comparison import heldout_prompts
from .runner import training_job_run
from .threads import torch_threads

logger = logging.getLogger(__name__)

TRAIN_METHODS = {
    Labeller.REWARD_MODEL: ("dpo", "ipo", "cdpo", "hinge", "sigmoid_norm"),
    Labeller.RSO: ("sigmoid_norm", "hinge"),
    Labeller.CREAM: ("cream", "dpo"),  # dpo: self-rewarding without the consistency regulariser
    Labeller.PEOPLE: ("dpo", "ipo", "cdpo", "rdpo", "hinge", "sigmoid_norm"),
}
PAIR_RULES = {
    Labeller.REWARD_MODEL: ("best_worst", "gap", "sampled_pairs"),
    Labeller.RSO: ("rso",),
    Labeller.CREAM: ("implicit_best_worst",),
    Labeller.PEOPLE: ("annotators",),
}
REFERENCES = ("round_policy", "start")
WAIT_SECONDS = 2.0
"""How often a loop waiting for a training job another worker runs looks at it."""
EXAMPLES = 4


class LoopCancelled(Exception):
    """The loop was asked to stop."""


class LoopError(Exception):
    """A round cannot go on (its training job failed, its labeller made no pair): the loop fails with it."""


@dataclass(frozen=True)
class LoopSettings:
    """How each round samples, pairs, trains and evaluates (stored on the loop)."""

    rounds: int = 3
    """Rounds to run (1–20)."""
    patience: int = 0
    """Stop after this many rounds without a better held-out score than the best so far (0: never)."""
    k: int = 4
    """Responses sampled per prompt (RSO: the pool it rejection-samples, 64 in the paper)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    max_prompts: int = 64
    """Training prompts sampled per round (the version's first distinct ones)."""
    eval_prompts: int = 32
    """Held-out prompts each evaluation answers."""
    max_prompt_length: int = 256
    """Prompts longer than this (tokens) are left out."""
    pair_rule: str = "best_worst"
    """best_worst (the OneRec recipe), gap (every pair at least ``gap`` apart), sampled_pairs (in sampling
    order, RSO's baseline), rso, or
    implicit_best_worst (CREAM: best and worst by the policy's own implicit reward)."""
    gap: float = 0.5
    rso_accept: int = 8
    """RSO: responses accepted per prompt (then paired)."""
    rso_beta: float = 0.5
    """RSO: β of the target π ∝ π_sft·exp(r/β)."""
    reference: str = "round_policy"
    """Each round's DPO reference: ``round_policy`` (the policy it starts from: iterative DPO) or ``start``
    (the loop's starting policy, every round)."""
    min_judgments: int = 0
    """People: the round goes on once this many judgments are in (0: one per task it posted)."""
    min_votes: int = 1
    """People: votes a task needs to become a row (the freeze rule's ``min_votes``)."""
    seed: int = 0
    train: dict = field(default_factory=dict)
    """The training job's settings (``method``, ``learning_rate``, ``max_steps``, ``lora``, …)."""

    @classmethod
    def for_labeller(cls, labeller: str, given: dict | None) -> LoopSettings:
        """The labeller's defaults overridden by ``given``; ValidationError names a bad field."""
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise ValidationError({"settings": "Loop settings must be an object of named settings."})
        train = given.get("train")
        if train is not None and not isinstance(train, dict):
            raise ValidationError({"settings.train": "train must be an object of training settings."})
        defaults = LABELLER_DEFAULTS.get(labeller, {})
        data = {**defaults, **given, "train": {**defaults.get("train", {}), **(train or {})}}
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            # keyed under settings: an unknown setting called "name" is not the loop's name field
            raise ValidationError({f"settings.{unknown[0]}": f"Unknown loop setting {unknown[0]!r}."})
        try:
            loop_settings = cls(**data)
        except TypeError as exc:
            raise ValidationError({"settings": str(exc)}) from None
        loop_settings.check(labeller)
        return loop_settings

    def check(self, labeller: str) -> None:
        errors = {}
        ranges = {
            "rounds": (1, 20),
            "patience": (0, 20),
            "k": (2, 256),
            "max_new_tokens": (1, 1024),
            "max_prompts": (1, 5000),
            "eval_prompts": (1, 1000),
            "max_prompt_length": (8, 8192),
            "rso_accept": (2, 256),
            "seed": (0, 2**31 - 1),
            "min_judgments": (0, 1_000_000),
            "min_votes": (1, 100),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                errors[name] = f"{name} must be a whole number from {low} to {high}, not {value!r}."
        for name, low, high in (
            ("temperature", 0, 2),
            ("top_p", 0, 1),
            ("gap", 0, 1e6),
            ("rso_beta", 0, 1e6),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                errors[name] = f"{name} must be above {low} and at most {high:g}, not {value!r}."
        if self.reference not in REFERENCES:
            errors["reference"] = f"reference is one of {', '.join(REFERENCES)}, not {self.reference!r}."
        if self.pair_rule not in PAIR_RULES.get(labeller, ()):
            rules = ", ".join(PAIR_RULES.get(labeller, ()))
            errors["pair_rule"] = f"The {labeller} labeller pairs by {rules}, not {self.pair_rule!r}."
        if labeller == Labeller.RSO and not errors.get("k") and self.rso_accept > self.k:
            errors["rso_accept"] = f"RSO accepts at most the {self.k} responses it samples (k)."
        method = self.train.get("method")
        if method not in TRAIN_METHODS.get(labeller, ()):
            methods = ", ".join(TRAIN_METHODS.get(labeller, ()))
            errors["train.method"] = f"A {labeller} loop trains with {methods}, not {method!r}."
        if errors:
            raise ValidationError(errors)
        _train_params_check(self.train)


LABELLER_DEFAULTS = {
    Labeller.REWARD_MODEL: {
        "pair_rule": "best_worst",
        "train": {"method": "dpo", "learning_rate": 5e-5, "lora": True, "batch_size": 4, "beta": 0.1},
    },
    Labeller.RSO: {
        "k": 64,
        "pair_rule": "rso",
        "train": {
            "method": "sigmoid_norm",
            "learning_rate": 5e-5,
            "lora": True,
            "batch_size": 4,
            "gamma": 0.05,
        },
    },
    Labeller.PEOPLE: {
        "k": 2,
        "pair_rule": "annotators",
        "train": {"method": "dpo", "learning_rate": 5e-5, "lora": True, "batch_size": 4, "beta": 0.1},
    },
    Labeller.CREAM: {
        "k": 5,
        "pair_rule": "implicit_best_worst",
        "train": {"method": "cream", "learning_rate": 5e-5, "lora": True, "batch_size": 4, "beta": 0.1},
    },
}


def _train_params_check(train: dict) -> None:
    """ValidationError naming ``train.<field>`` when the training settings are not a config the engine
    takes (the server's own paths stand in for the model and files)."""
    placeholder = {"model": "tiny:check", "train_file": "check.jsonl", "output_dir": "check"}
    try:
        config_from_dict({**train, **placeholder})
    except (ConfigError, TypeError, ValueError) as exc:
        name, _, message = str(exc).partition(": ")
        raise ValidationError({f"train.{name}" if message else "train": str(exc)}) from None


def loop_dir(loop: Loop) -> Path:
    """The loop's own folder (named by its server-made token) under ARTIFACT_ROOT."""
    return artifact_root() / "loops" / loop.run_token


def round_dir(loop: Loop, number: int) -> Path:
    return loop_dir(loop) / f"round-{number}"


def _model_problem(model: ModelEntry | None, user, *, kind: str, noun: str) -> str | None:
    if model is None:
        return f"Choose a {noun}."
    if not models_for_user(user=user).filter(pk=model.pk).exists():
        return "No such model among those you can use."
    if model.kind != kind:
        return f"{model.name} is a {model.get_kind_display()}, not a {noun}."
    return None


def loop_create(
    *,
    name: str,
    prompt_version: DatasetVersion,
    start_model: ModelEntry | None,
    reward_model: ModelEntry | None,
    labeller: str,
    settings: dict | None = None,
    created_by=None,
) -> Loop:
    """Queue a loop; ValidationError names the field of anything it could not run with."""
    errors = {}
    if labeller not in Labeller.values:
        raise ValidationError({"labeller": f"labeller must be one of {', '.join(Labeller.values)}."})
    if not (name or "").strip():
        errors["name"] = "Give the loop a name."
    if problem := _model_problem(start_model, created_by, kind=ModelKind.CAUSAL_LM, noun="language model"):
        errors["start_model"] = problem
    if problem := _model_problem(reward_model, created_by, kind=ModelKind.REWARD_MODEL, noun="reward model"):
        errors["reward_model"] = problem
    project = prompt_version.project
    if project.task_type not in (TaskType.PAIRWISE, TaskType.RANKING):
        errors["prompt_version"] = (
            "A loop samples text prompts: choose a version of a pairwise or ranking project."
        )
    elif not heldout_prompts(version=prompt_version, split="train"):
        errors["prompt_version"] = f"{prompt_version} has no training prompts to sample."
    elif not heldout_prompts(version=prompt_version, split="test"):
        errors["prompt_version"] = f"{prompt_version} has no held-out prompts to evaluate each round on."
    try:
        loop_settings = LoopSettings.for_labeller(labeller, settings)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    loop = Loop.objects.create(
        name=name.strip()[:200],
        project=project,
        prompt_version=prompt_version,
        start_model=start_model,
        reward_model=reward_model,
        labeller=labeller,
        settings=asdict(loop_settings),
        run_token=new_run_token(),
        created_by=created_by,
    )
    loop_dir(loop).mkdir(parents=True)
    job_send_on_commit(LOOP_JOBS, loop.pk)
    return loop


def loop_cancel(*, loop: Loop) -> Loop:
    """Ask a loop to stop: a queued one is cancelled at once, a running one at its next check; the training
    job of its current round is cancelled too (its round trains again when the loop is resumed)."""
    now = timezone.now()
    Loop.objects.filter(pk=loop.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED, cancel_requested=True, finished_at=now
    )
    Loop.objects.filter(pk=loop.pk, state=JobState.RUNNING).update(cancel_requested=True)
    for job in TrainingJob.objects.filter(loop_round__loop=loop).exclude(state__in=FINISHED_STATES):
        training_job_cancel(job=job)
    loop.refresh_from_db()
    return loop


def loop_resume(*, loop: Loop) -> Loop:
    """Queue a cancelled or failed loop again: it goes on from the stage it stopped in."""
    resumed = Loop.objects.filter(pk=loop.pk, state__in=(JobState.CANCELLED, JobState.FAILED)).update(
        state=JobState.QUEUED, cancel_requested=False, error="", traceback="", finished_at=None, sent_at=None
    )
    if not resumed:
        raise ValidationError("Only a cancelled or failed loop can be resumed.")
    job_send_on_commit(LOOP_JOBS, loop.pk)
    loop.refresh_from_db()
    return loop


def _enqueue(loop_id: int) -> None:
    from ..tasks import loop_run

    loop_run.apply_async(args=[loop_id], queue=Queue.CPU)


LOOP_JOBS = JobKind(
    name="loop",
    model=Loop,
    enqueue=_enqueue,
    stale_after=seconds_setting("TRAINING_HEARTBEAT_STALE_SECONDS"),
    max_attempts=setting("LOOP_MAX_ATTEMPTS"),
    fail=lambda loop: {"error": f"The worker stopped reporting {loop.attempts} times; giving up."},
    waiting=Q(cancel_requested=False),
    resend_after=seconds_setting("TRAINING_QUEUED_RESEND_SECONDS"),
    cancel_field="cancel_requested",
)
"""A loop whose worker died is queued again and resumes at the stage its rounds recorded."""


# --- running a loop --------------------------------------------------------------------------------------


class _Attempt:
    """One attempt's hold on a loop: stage and progress reports, and the cancel check."""

    def __init__(self, loop: Loop, lease: Lease) -> None:
        self.loop, self.lease = loop, lease
        self.settings = LoopSettings(**loop.settings)

    def check(self) -> None:
        if self.lease.lost.is_set():
            raise LeaseLost(f"loop {self.loop.pk}: taken over")
        if Loop.objects.filter(pk=self.loop.pk, cancel_requested=True).exists():
            raise LoopCancelled

    def stage(self, stage: str, number: int, done: int = 0, total: int = 0) -> None:
        self.check()
        self.lease.renew(stage=stage, round_number=number, progress_done=done, progress_total=total)

    def progress(self, done: int, total: int) -> None:
        self.check()
        self.lease.renew(progress_done=done, progress_total=total)


def loop_run(*, loop_id: int) -> None:
    """Run (or resume) a queued loop to its end (the Celery task calls this); errors end up on the row."""
    import torch

    lease = job_claim(Loop, pk=loop_id, waiting=Q(cancel_requested=False))
    if lease is None:
        return
    loop = Loop.objects.select_related("start_model", "reward_model", "prompt_version").get(pk=loop_id)
    attempt = _Attempt(loop, lease)
    torch.set_num_threads(torch_threads())
    try:
        with lease.heartbeat(django_settings.TRAINING_HEARTBEAT_SECONDS):
            result = _drive(attempt)
    except LeaseLost:
        return
    except LoopCancelled:
        lease.finish(JobState.CANCELLED)
        return
    except Exception as error:  # the row must say why; the worker keeps running
        lease.finish(JobState.FAILED, error=str(error), traceback=traceback.format_exc(limit=5))
        return
    lease.finish(JobState.SUCCEEDED, stage=LoopStage.DONE, result=result)


def _drive(attempt: _Attempt) -> dict:
    loop, settings = attempt.loop, attempt.settings
    if "baseline" not in loop.result:
        attempt.stage(LoopStage.BASELINE, 0)
        rows = _held_out_rows(attempt, loop.start_model)
        loop.result = {**loop.result, "baseline": _summary(rows, None), "baseline_rows": rows}
        attempt.lease.renew(result=loop.result)
    while True:
        current = loop.rounds.order_by("-number").first()
        if current is None or current.stage == LoopStage.DONE:
            if reason := _stop_reason(loop, settings):
                return {**loop.result, "stopped": reason}
            number = 1 if current is None else current.number + 1
            policy = loop.start_model if current is None else current.trained_model
            current = LoopRound.objects.create(loop=loop, number=number, policy=policy)
        _advance(attempt, current)


def _stop_reason(loop: Loop, settings: LoopSettings) -> str | None:
    done = list(loop.rounds.filter(stage=LoopStage.DONE).order_by("number"))
    if len(done) >= settings.rounds:
        return f"ran {len(done)} round{'s' if len(done) != 1 else ''}"
    if settings.patience and len(done) >= settings.patience:
        scores = [loop.result["baseline"]["mean_score"]] + [r.evaluation["mean_score"] for r in done]
        best_before = max(scores[: -settings.patience])
        if max(scores[-settings.patience :]) <= best_before:
            plural = "s" if settings.patience > 1 else ""
            return f"no better held-out score for {settings.patience} round{plural}"
    return None


def _advance(attempt: _Attempt, current: LoopRound) -> None:
    """Run the round's current stage and record its outcome (with the next stage)."""
    if current.stage == LoopStage.GENERATE:
        _generate(attempt, current)
    elif current.stage in (LoopStage.LABEL, LoopStage.FREEZE):
        _label_and_freeze(attempt, current)
    elif current.stage == LoopStage.TRAIN:
        _train(attempt, current)
    elif current.stage == LoopStage.EVALUATE:
        attempt.stage(LoopStage.EVALUATE, current.number)
        rows = _held_out_rows(attempt, current.trained_model)
        evaluation = {**_summary(rows, attempt.loop.result["baseline_rows"]), "examples": rows[:EXAMPLES]}
        LoopRound.objects.filter(pk=current.pk).update(
            evaluation=evaluation, stage=LoopStage.DONE, finished_at=timezone.now()
        )
    current.refresh_from_db()


def _summary(rows: list[dict], baseline: list[dict] | None) -> dict:
    from training.engine.lm.policy_eval import policy_summary

    return policy_summary(rows, baseline)


def _prompts(version: DatasetVersion, split: str, limit: int) -> list:
    return heldout_prompts(version=version, split=split)[:limit]


def _candidates_path(loop: Loop, number: int) -> Path:
    return round_dir(loop, number) / "candidates.json"


def _generate(attempt: _Attempt, current: LoopRound) -> None:
    from training.engine.lm.online import sample_candidates
    from training.engine.lm.rollout import SamplingConfig

    loop, settings = attempt.loop, attempt.settings
    path = _candidates_path(loop, current.number)
    if not path.is_file():
        attempt.stage(LoopStage.GENERATE, current.number)
        models = _Models(current.policy, loop.reward_model)
        prompts, ids = models.prompts(_prompts(loop.prompt_version, "train", settings.max_prompts), settings)
        attempt.stage(LoopStage.GENERATE, current.number, 0, len(prompts))
        sampling = SamplingConfig(
            settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p
        )
        found = sample_candidates(
            models.policy,
            ids,
            tokenizer=models.tokenizer,
            k=settings.k,
            sampling=sampling,
            seed=settings.seed * 1000 + current.number,
            reward_model=models.reward_model,
            between_batches=lambda done: attempt.progress(done, len(prompts)),
        )
        payload = {
            "prompts": prompts,
            "prompt_ids": ids,
            "candidates": [[c.to_dict() for c in one] for one in found],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, ensure_ascii=False))
        tmp.replace(path)
    LoopRound.objects.filter(pk=current.pk).update(stage=LoopStage.LABEL)


def _label_and_freeze(attempt: _Attempt, current: LoopRound) -> None:
    from training.engine.lm.online import Candidate, PairRule, preference_rows

    loop, settings = attempt.loop, attempt.settings
    attempt.stage(LoopStage.LABEL, current.number)
    payload = json.loads(_candidates_path(loop, current.number).read_text())
    candidates = [[Candidate(**c) for c in one] for one in payload["candidates"]]
    if loop.labeller == Labeller.CREAM:
        rows, labelling = _cream_label(attempt, current, payload, candidates)
        rule = {"rule": settings.pair_rule, "ranked_by": labelling["ranked_by"]}
    elif loop.labeller == Labeller.PEOPLE:
        rows, labelling = _people_label(attempt, current, payload, candidates)
        rule = {"rule": settings.pair_rule, "min_votes": settings.min_votes}
    else:
        pair_rule = PairRule(settings.pair_rule, settings.gap, settings.rso_accept, settings.rso_beta)
        rows, labelling = preference_rows(
            payload["prompts"], candidates, pair_rule, seed=settings.seed + current.number
        )
        rule = asdict(pair_rule)
    scores = [c.score for one in candidates for c in one]
    labelling.update(
        candidates=len(scores),
        mean_candidate_score=sum(scores) / len(scores) if scores else None,
        mean_candidate_length=sum(c.length for one in candidates for c in one) / len(scores)
        if scores
        else None,
    )
    if not rows and loop.labeller == Labeller.PEOPLE:
        dropped = ", ".join(f"{why}: {n}" for why, n in labelling["tasks_dropped"].items()) or "none"
        raise LoopError(
            f"Round {current.number}: the annotators' judgments made no row (tasks dropped by the rule: "
            f"{dropped}); judge more of its tasks or lower min_votes, then resume the loop."
        )
    if not rows:
        raise LoopError(
            f"Round {current.number}: the {loop.get_labeller_display().split(':')[0]} labeller made no pair "
            f"(every prompt's candidates scored alike); sample more (k) or at a higher temperature."
        )
    attempt.stage(LoopStage.FREEZE, current.number)
    provenance = {
        "source": "loop",
        "loop": loop.pk,
        "loop_name": loop.name,
        "round": current.number,
        "labeller": loop.labeller,
        "policy": current.policy.name,
        "reward_model": loop.reward_model.name if loop.reward_model else None,
        "pair_rule": rule,
        "sampling": {"k": settings.k, "temperature": settings.temperature, "top_p": settings.top_p},
    }

    def link(version: DatasetVersion) -> None:
        LoopRound.objects.filter(pk=current.pk).update(
            dataset_version=version, labelling=labelling, stage=LoopStage.TRAIN
        )

    try:
        dataset_version_from_rows(
            project=loop.project,
            rows=[("train", row) for row in rows],
            provenance=provenance,
            seed=settings.seed,
            stats={"pairs": labelling},
            created_by=loop.created_by,
            on_written=link,
        )
    except FreezeError as exc:
        raise LoopError(f"Round {current.number}: {exc}") from exc


def _cream_rankers(current: LoopRound) -> tuple[tuple, tuple | None]:
    """The current and the previous ranking of a CREAM round, each ``(model, its reference)``.

    A ranking is a model's implicit reward against its DPO reference (``_reference_of``).  The current
    one falls back to the policy's own log-likelihood (reference None) when it has no reference, so a loop
    can start from any model.  The previous one is the last round's policy, and exists only when that
    model has a reference: its bare log-likelihood would be no reward, and one the current reward (which
    subtracts it) is built to disagree with.  So round 1 (no last round) and a round after a base-less
    start have no previous ranking: plain self-rewarding, C = 1 for every pair.  Starting from a tuned
    model (its base the model it was tuned from, as the paper's SFT model) gives round 2 on a C."""
    policy = current.policy
    previous = None
    if current.number > 1:
        previous = (
            LoopRound.objects.select_related("policy__base")
            .get(loop_id=current.loop_id, number=current.number - 1)
            .policy
        )
    before = _reference_of(current.loop, previous) if previous is not None else None
    return (policy, _reference_of(current.loop, policy)), ((previous, before) if before is not None else None)


def _reference_of(loop: Loop, model: ModelEntry) -> ModelEntry | None:
    """The model ``model`` was trained against: the loop's starting policy when every round keeps it as
    the reference, else the model it was trained from (``base``); None for a model with neither."""
    if loop.settings.get("reference") == "start" and model.pk != loop.start_model_id:
        return loop.start_model
    return model.base


def _cream_label(
    attempt: _Attempt, current: LoopRound, payload: dict, candidates: list
) -> tuple[list[dict], dict]:
    from training.engine.lm.consistency import candidate_rewards, cream_rows
    from training.engine.lm.models import load_model, load_tokenizer
    from training.engine.lm.policy_eval import distinct_prompts

    responses = [[c.token_ids for c in one] for one in candidates]
    if any(ids is None for one in responses for ids in one):
        raise LoopError(f"Round {current.number}: its candidates carry no token ids to rank; generate again.")
    tokenizer = load_tokenizer(current.policy.spec)
    prompt_ids = payload.get("prompt_ids") or distinct_prompts(payload["prompts"], tokenizer)[1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loaded: dict[int, object] = {}

    def model(entry: ModelEntry | None):
        if entry is None:
            return None
        if entry.pk not in loaded:
            loaded[entry.pk] = load_model(entry.spec)
        return loaded[entry.pk]

    now, before = _cream_rankers(current)
    total = sum(len(one) for one in responses) * (2 if before else 1)
    rankings = []
    for n, ranker in enumerate((now, before)):
        if ranker is None:
            rankings.append(None)
            continue
        offset = n * sum(len(one) for one in responses)
        rankings.append(
            candidate_rewards(
                model(ranker[0]),
                model(ranker[1]),
                prompt_ids,
                responses,
                pad_token_id=pad,
                between_batches=lambda done, offset=offset: attempt.progress(offset + done, total),
            )
        )
    rows, labelling = cream_rows(payload["prompts"], candidates, rankings[0], rankings[1])

    def named(ranker):
        if ranker is None:
            return None
        entry, reference = ranker
        return f"{entry.name} − {reference.name}" if reference else f"log-likelihood of {entry.name}"

    labelling["ranked_by"] = {"current": named(now), "previous": named(before)}
    return rows, labelling


def _people_label(
    attempt: _Attempt, current: LoopRound, payload: dict, candidates: list
) -> tuple[list[dict], dict]:
    """Post the round's samples as tasks of the loop's project, wait until enough judgments are in, and
    make rows of the current votes on those tasks by the freeze rule (``min_votes``)."""
    from annotation.selectors import human_judgment_count
    from annotation.services.candidates import candidates_post
    from annotation.services.versions import FreezeRule, rows_for_tasks

    loop, settings = attempt.loop, attempt.settings
    tasks = candidates_post(
        project=loop.project,
        prompts=payload["prompts"],
        texts=[[c.response for c in one] for one in candidates],
        batch=f"loop-{loop.run_token}-round-{current.number}",
        provenance={"kind": "loop", "loop": loop.pk, "round": current.number, "policy": current.policy.name},
    )
    needed = settings.min_judgments or len(tasks)
    LoopRound.objects.filter(pk=current.pk).update(
        labelling={"tasks": len(tasks), "judgments_needed": needed}
    )
    attempt.stage(LoopStage.LABEL, current.number, 0, needed)
    while (done := human_judgment_count(task_ids=tasks)) < needed:
        attempt.progress(done, needed)
        time.sleep(WAIT_SECONDS)
    attempt.progress(done, needed)
    rows, stats = rows_for_tasks(
        project=loop.project, task_ids=tasks, rule=FreezeRule(min_votes=settings.min_votes)
    )
    labelling = {
        "pairs": len(rows),
        "prompts": len(payload["prompts"]),
        "tasks": len(tasks),
        "judgments": done,
        "judgments_needed": needed,
        **stats,
    }
    return rows, labelling


def _train(attempt: _Attempt, current: LoopRound) -> None:
    job = current.training_job
    if job is None or job.state in (JobState.CANCELLED, JobState.FAILED):
        job = _launch_round_job(attempt, current)  # a resumed loop trains a cancelled or failed round again
    attempt.stage(LoopStage.TRAIN, current.number)
    while True:
        job.refresh_from_db()
        if job.state == JobState.QUEUED:
            training_job_run(job_id=job.pk)  # runs it here unless another worker claimed it first
            continue
        if job.state == JobState.SUCCEEDED:
            break
        if job.state == JobState.FAILED:
            raise LoopError(f"Round {current.number}: training job {job.pk} failed: {job.error}")
        if job.state == JobState.CANCELLED:
            attempt.check()  # the loop's own cancel cancelled it
            raise LoopError(f"Round {current.number}: training job {job.pk} was cancelled.")
        attempt.progress(job.step, job.total_steps or 0)
        time.sleep(WAIT_SECONDS)
    model = getattr(job, "produced_model", None)
    if model is None:
        raise LoopError(f"Round {current.number}: training job {job.pk} registered no model.")
    LoopRound.objects.filter(pk=current.pk).update(trained_model=model, stage=LoopStage.EVALUATE)


@transaction.atomic
def _launch_round_job(attempt: _Attempt, current: LoopRound) -> TrainingJob:
    loop, settings = attempt.loop, attempt.settings
    LoopRound.objects.select_for_update().filter(pk=current.pk).first()
    current.refresh_from_db()
    if current.training_job is not None and current.training_job.state not in (
        JobState.CANCELLED,
        JobState.FAILED,
    ):
        return current.training_job  # another attempt launched it meanwhile
    params = {**settings.train, "seed": settings.seed + current.number, "save_final": True}
    if settings.reference == "start" and current.policy_id != loop.start_model_id:
        params["reference_model"] = loop.start_model_id
    job = training_job_launch(
        params=params,
        base_model=current.policy,
        dataset_version=current.dataset_version,
        queue=Queue.CPU,
        created_by=loop.created_by,
    )
    LoopRound.objects.filter(pk=current.pk).update(training_job=job)
    return job


class _Models:
    """The round's policy, its tokenizer and the reward model, loaded once per stage."""

    def __init__(
        self, policy: ModelEntry, reward_model: ModelEntry, reference: ModelEntry | None = None
    ) -> None:
        from training.engine.lm.models import load_model, load_tokenizer
        from training.engine.lm.policy_eval import same_vocabulary
        from training.engine.lm.rewards import load_reward_model

        self.tokenizer = load_tokenizer(policy.spec)
        same_vocabulary(
            self.tokenizer, {f"reward model {reward_model.name}": load_tokenizer(reward_model.spec)}
        )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.policy = load_model(policy.spec)
        self.reward_model = load_reward_model(reward_model.spec, pad_token_id=pad)
        self.reference = (
            None if reference is None or reference.pk == policy.pk else load_model(reference.spec)
        )

    def prompts(self, prompts: list, settings: LoopSettings) -> tuple[list, list[list[int]]]:
        from training.engine.lm.policy_eval import distinct_prompts

        kept, ids, _ = distinct_prompts(prompts, self.tokenizer, max_prompt_length=settings.max_prompt_length)
        if not kept:
            raise LoopError(
                f"Every prompt is longer than max_prompt_length ({settings.max_prompt_length} tokens)."
            )
        return kept, ids


def _held_out_rows(attempt: _Attempt, model: ModelEntry) -> list[dict]:
    """Greedy answers of ``model`` to the held-out prompts: score, KL to the starting policy, length."""
    from training.engine.lm.policy_eval import greedy_scored, logprobs_of, response_rows

    loop, settings = attempt.loop, attempt.settings
    models = _Models(model, loop.reward_model, reference=loop.start_model)
    prompts, ids = models.prompts(_prompts(loop.prompt_version, "test", settings.eval_prompts), settings)
    eos = models.tokenizer.eos_token_id
    pad = models.tokenizer.pad_token_id if models.tokenizer.pad_token_id is not None else eos
    rows, batch = [], 8
    reference = logprobs_of(models.reference or models.policy)
    for n, scored in enumerate(
        greedy_scored(
            models.policy,
            ids,
            reward_model=models.reward_model,
            reference=reference,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            batch_size=batch,
            between_batches=attempt.check,
        )
    ):
        rows += response_rows(models.tokenizer, scored)
        attempt.progress(min(len(ids), (n + 1) * batch), len(ids))
    for prompt, row in zip(prompts, rows, strict=True):
        row["prompt"] = prompt
    return rows
