"""Reward-model scores of a project's candidates: a job (``GenerationJob`` of kind ``reward_scores``, on
the generation queue and the job core's lease) scores every text candidate of every item with one
reward-model entry and stores one ``CandidateScore`` per candidate and model, with its provenance (the
entry, its name and spec at the time, the job, when and by whom).  Scoring again with the same model
replaces the earlier scores; scores of other models stay.  Each item's scores are written in one
transaction, and a resumed attempt skips the candidates this job already scored.
"""

from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.models import Candidate, Item, Project, TaskType
from annotation.services.candidates import item_prompt
from jobs.leases import Lease
from jobs.sending import job_send_on_commit

from ..generation_stages import RUNNING
from ..models import CandidateScore, GenerationJob, GenerationKind, ModelEntry, ModelKind
from ..selectors import models_for_user

# [(prompt, response), ...] -> one reward per pair
Scorer = Callable[[Sequence[tuple[Any, Any]]], list[float]]

BATCH_SIZE = 8


def model_scorer(spec: str, *, max_length: int | None = None) -> Scorer:
    """Load the reward model once and return a scorer built on the engine's ``score_responses``."""
    from training.engine.lm.models import load_tokenizer
    from training.engine.lm.rewards import load_reward_model
    from training.engine.lm.scoring import score_responses

    tokenizer = load_tokenizer(spec)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = load_reward_model(spec, pad_token_id=pad)

    def score(pairs: Sequence[tuple[Any, Any]]) -> list[float]:
        return score_responses(model, tokenizer, pairs, max_length=max_length, batch_size=BATCH_SIZE)

    return score


def trained_max_length(model: ModelEntry) -> int | None:
    """The ``max_length`` the entry was trained with (its job's config), so scoring cuts as training did."""
    job = model.produced_by
    value = (job.config or {}).get("max_length") if job is not None else None
    return value if isinstance(value, int) and value > 0 else None


def reward_scores_job_create(*, project: Project, model: ModelEntry | None, created_by) -> GenerationJob:
    """Queue a job scoring every text candidate of ``project`` with the reward model ``model``, which
    ``created_by`` must be allowed to see; a ValidationError names the field ``model`` otherwise."""
    if model is None:
        raise ValidationError({"model": "Choose a reward model."})
    if not models_for_user(user=created_by).filter(pk=model.pk).exists():
        raise ValidationError({"model": "No such model among those you can use."})
    if model.kind != ModelKind.REWARD_MODEL:
        raise ValidationError(
            {"model": f"{model.name} is a {model.get_kind_display()}, not a reward model: it cannot score."}
        )
    if project.task_type == TaskType.IMAGE_PAIR:
        raise ValidationError("A reward model scores text candidates; this project's candidates are images.")
    job = GenerationJob.objects.create(
        project=project,
        kind=GenerationKind.REWARD_SCORES,
        model=model,
        model_spec=model.spec,
        options={"batch_size": BATCH_SIZE, "max_length": trained_max_length(model)},
        created_by=created_by,
    )
    from .generation import GENERATION_JOBS

    job_send_on_commit(GENERATION_JOBS, job.pk)
    return job


def candidate_response(candidate: Candidate) -> Any:
    """What the reward model reads as the response: the assistant turns, else the text (or steps,
    or sentences); None for a candidate without text (an image)."""
    if candidate.messages:
        return candidate.messages
    if candidate.text:
        return candidate.text
    if candidate.steps:
        return "\n".join(candidate.steps)
    if candidate.sentences:
        return " ".join(s if isinstance(s, str) else str(s.get("text", "")) for s in candidate.sentences)
    return None


def _scores_save(*, job: GenerationJob, candidates: list[Candidate], scores: list[float]) -> None:
    now, model = timezone.now(), job.model
    with transaction.atomic():
        for candidate, score in zip(candidates, scores, strict=True):
            CandidateScore.objects.update_or_create(
                candidate=candidate,
                model=model,
                defaults={
                    "score": score,
                    "model_name": model.name,
                    "model_spec": job.model_spec,
                    "job": job,
                    "scored_at": now,
                    "scored_by": job.created_by,
                },
            )


def reward_scores_job_body(
    *, job: GenerationJob, lease: Lease, scorer_factory: Callable[..., Scorer] = model_scorer
) -> dict:
    """The job body for kind ``reward_scores`` (``generation_job_run`` calls it); raises LeaseLost."""
    if job.model is None or job.model.kind != ModelKind.REWARD_MODEL:
        raise ValueError("The job's reward model was deleted, or is not a reward model.")
    items = list(Item.objects.filter(project=job.project).prefetch_related("candidates").order_by("pk"))
    done_before = set(CandidateScore.objects.filter(job=job).values_list("candidate_id", flat=True))
    lease.renew(progress_done=0, progress_total=len(items))
    score = scorer_factory(job.model_spec, max_length=job.options.get("max_length"))
    scored = skipped = 0
    for done, item in enumerate(items, start=1):
        prompt = item_prompt(item, job.project.task_type)
        todo = [c for c in item.candidates.all() if c.pk not in done_before]
        texts = [(c, candidate_response(c)) for c in todo]
        todo = [c for c, response in texts if response is not None]
        skipped += len(texts) - len(todo)
        if todo:
            scores = score([(prompt, candidate_response(c)) for c in todo])
            _scores_save(job=job, candidates=todo, scores=scores)
            scored += len(todo)
        lease.renew(stage=RUNNING, progress_done=done, progress_total=len(items))
    result = {"items": len(items), "scored": scored, "without_text": skipped}
    return {**result, "resumed_after": len(done_before)} if done_before else result
