"""Candidate generation: a registered model samples K responses per item (on-policy candidates).

A ``GenerationJob`` row is the source of truth (state, progress, error). ``generation_job_run`` claims the
job with one conditional update, so a duplicate delivery does nothing. Each item's candidates and tasks
are written in one transaction: a job that dies half-way leaves whole items only.

Tasks per project type (docs/data-mapping.md): pairwise, every pair of the new candidates; ranking, one
task with all of them; step-wise and factuality, one task per candidate (steps / sentences split here).
"""

import hashlib
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from itertools import combinations

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from annotation.builders.arithmetic import split_steps
from annotation.text.sentences import split_sentences
from jobs.leases import Lease, LeaseLost, job_claim
from jobs.models import JobState
from jobs.recovery import JobKind

from ..models import Candidate, GenerationJob, GenerationKind, Item, Project, Task, TaskType

GENERATION_TYPES = (TaskType.PAIRWISE, TaskType.RANKING, TaskType.STEPWISE, TaskType.FACTUALITY)
STEP_INSTRUCTION = "Solve it step by step, one step per line, and end with: The answer is N."

# (prompts, settings, seed) -> one completion per prompt
Sampler = Callable[[Sequence, "GenerationSettings", int], list[str]]


@dataclass(frozen=True)
class GenerationSettings:
    """How candidates are sampled; stored on the job and in each candidate's provenance."""

    k: int = 2
    """Responses sampled per item (2..16; a ranking needs at least 2)."""
    temperature: float = 0.8
    """Sampling temperature (> 0, at most 2)."""
    top_p: float = 0.95
    """Nucleus mass, in (0, 1]."""
    max_new_tokens: int = 128
    """Most tokens per response (1..2048)."""
    seed: int = 0
    """Base seed; item i samples with seed_for(seed, item id)."""

    def __post_init__(self) -> None:
        errors = {}
        if not isinstance(self.k, int) or not 1 <= self.k <= 16:
            errors["k"] = f"k must be an integer from 1 to 16, not {self.k!r}."
        if not 0 < self.temperature <= 2:
            errors["temperature"] = f"temperature must be above 0 and at most 2, not {self.temperature!r}."
        if not 0 < self.top_p <= 1:
            errors["top_p"] = f"top_p must be above 0 and at most 1, not {self.top_p!r}."
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 2048:
            errors["max_new_tokens"] = f"max_new_tokens must be from 1 to 2048, not {self.max_new_tokens!r}."
        if errors:
            raise ValidationError(errors)


def seed_for(base: int, item_id: int) -> int:
    """A per-item seed that does not depend on which other items the job covers."""
    digest = hashlib.sha256(f"{base}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def model_sampler(spec: str) -> Sampler:
    """Load the model once and return a sampler built on the engine's ``generate`` (imports torch)."""
    from training.engine.lm.generate import GenerationConfig, generate
    from training.engine.lm.models import load_model, load_tokenizer

    model, tokenizer = load_model(spec), load_tokenizer(spec)

    def sample(prompts: Sequence, settings: GenerationSettings, seed: int) -> list[str]:
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            mode="sample",
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=seed,
        )
        return generate(model, tokenizer, list(prompts), config)

    return sample


def generation_job_create(
    *,
    project: Project,
    settings: GenerationSettings,
    model=None,
    spec: str | None = None,
    kind: str = GenerationKind.CANDIDATES,
    created_by=None,
) -> GenerationJob:
    """Queue a job; ``model`` is a ModelEntry (the bundled SmolLM2 when neither it nor ``spec`` is given)."""
    if kind == GenerationKind.CANDIDATES and project.task_type not in GENERATION_TYPES:
        raise ValidationError(
            f"Candidate generation fills pairwise, ranking, step-wise and factuality projects, "
            f"not {project.get_task_type_display()} projects."
        )
    comparing = (TaskType.PAIRWISE, TaskType.RANKING)
    if kind == GenerationKind.CANDIDATES and project.task_type in comparing and settings.k < 2:
        label = project.get_task_type_display()
        raise ValidationError({"k": f"A {label} project needs at least 2 responses per item."})
    if kind == GenerationKind.STEP_PIPELINE and project.task_type != TaskType.STEPWISE:
        raise ValidationError("Automatic step checking runs on step-wise projects.")
    if model is None and spec is None:
        from training.services.registry import model_entry_ensure_bundled

        model = model_entry_ensure_bundled()
    job = GenerationJob.objects.create(
        project=project,
        kind=kind,
        model=model,
        model_spec=spec or model.spec,
        options=asdict(settings),
        created_by=created_by,
    )
    transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from ..tasks import generation_run

    generation_run.delay(job_id)


def generation_job_progress_set(*, lease: Lease, done: int, total: int) -> None:
    """Record progress; it doubles as the worker's heartbeat. Raises LeaseLost after a takeover."""
    lease.renew(progress_done=done, progress_total=total)


GENERATION_JOBS = JobKind(
    name="generation",
    model=GenerationJob,
    enqueue=_enqueue,
    stale_after=lambda: timedelta(seconds=django_settings.ANNOTATION_JOB_STALE_SECONDS),
    max_attempts=lambda: django_settings.ANNOTATION_JOB_MAX_ATTEMPTS,
    fail=lambda job: {"error": f"The worker stopped reporting {job.attempts} times; giving up."},
)
"""Generations whose worker died resume where they stopped: the heartbeat is written after each item, so
the stale limit must exceed the longest item (K samples)."""


def generation_job_run(*, job_id: int, sampler_factory: Callable[[str], Sampler] = model_sampler) -> None:
    """Run a queued job to the end (the Celery task calls this); errors end up on the row."""
    lease = job_claim(GenerationJob, pk=job_id)
    if lease is None:
        return
    job = GenerationJob.objects.select_related("project").get(pk=job_id)
    try:
        if job.kind == GenerationKind.STEP_PIPELINE:
            from .step_pipeline import step_pipeline_job_body

            result = step_pipeline_job_body(job=job, lease=lease, sampler_factory=sampler_factory)
        else:
            result = _candidates_job_body(job=job, lease=lease, sampler=sampler_factory(job.model_spec))
    except LeaseLost:
        return
    except Exception as error:  # the row must say why; the worker keeps running
        lease.finish(JobState.FAILED, error=str(error), traceback=traceback.format_exc(limit=5))
        return
    lease.finish(JobState.SUCCEEDED, result=result)


def items_to_fill(*, project: Project):
    """Items that generation samples for: not gold, not Step-DPO proposals."""
    return project.items.filter(is_gold=False).exclude(metadata__has_key="step_proposal").order_by("id")


def _candidates_job_body(*, job: GenerationJob, lease: Lease, sampler: Sampler) -> dict:
    settings = GenerationSettings(**job.options)
    items = list(items_to_fill(project=job.project))
    finished = set(  # a resumed job skips the items an earlier attempt already filled
        Candidate.objects.filter(item__project=job.project, provenance__job=job.pk).values_list(
            "item_id", flat=True
        )
    )
    generation_job_progress_set(lease=lease, done=len(finished), total=len(items))
    created = tasks = 0
    model_name = job.model.name if job.model else job.model_spec
    todo = [item for item in items if item.pk not in finished]
    for done, item in enumerate(todo, start=len(items) - len(todo) + 1):
        seed = seed_for(settings.seed, item.pk)
        texts = sampler([item_prompt(item, job.project.task_type)] * settings.k, settings, seed)
        provenance = {"kind": "model", "model": model_name}
        provenance.update(spec=job.model_spec, job=job.pk, **asdict(settings), item_seed=seed)
        n_candidates, n_tasks = candidates_add(item=item, texts=texts, provenance=provenance)
        created, tasks = created + n_candidates, tasks + n_tasks
        generation_job_progress_set(lease=lease, done=done, total=len(items))
    result = {"items": len(items), "candidates": created, "tasks": tasks}
    return {**result, "resumed_after": len(finished)} if finished else result


def item_prompt(item: Item, task_type: str):
    """What the model is asked: the item's messages or prompt (step-wise adds the step instruction)."""
    if item.messages:
        return item.messages
    if task_type == TaskType.STEPWISE:
        return f"{item.prompt}\n\n{STEP_INSTRUCTION}"
    return item.prompt


def candidates_add(*, item: Item, texts: list[str], provenance: dict) -> tuple[int, int]:
    """Append sampled responses to an item and create the tasks its project type needs."""
    task_type = item.project.task_type
    with transaction.atomic():
        top = item.candidates.aggregate(top=Max("position"))["top"]
        start = 0 if top is None else top + 1
        candidates = [
            Candidate.objects.create(
                item=item,
                position=start + index,
                text=text,
                steps=(split_steps(text) or [text]) if task_type == TaskType.STEPWISE else None,
                sentences=split_sentences(text) if task_type == TaskType.FACTUALITY else None,
                provenance={**provenance, "sample_index": index},
            )
            for index, text in enumerate(texts)
        ]
        ids = [c.pk for c in candidates]
        if task_type == TaskType.PAIRWISE:
            groups = [list(pair) for pair in combinations(ids, 2)]
        elif task_type == TaskType.RANKING:
            groups = [ids] if len(ids) >= 2 else []
        else:
            groups = [[candidate_id] for candidate_id in ids]
        Task.objects.bulk_create(Task(project=item.project, item=item, candidate_ids=g) for g in groups)
    return len(candidates), len(groups)


def generation_job_progress(job: GenerationJob) -> dict:
    """Plain figures for the progress fragment."""
    total = job.progress_total
    percent = round(100 * job.progress_done / total, 1) if total else 0.0
    return {"percent": percent, "finished": job.finished, "done": job.progress_done, "total": total}
