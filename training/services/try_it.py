"""Try a trained model: a prompt typed on its job's page, answered by the base model and the trained one
with the same decoding settings and seed, side by side (LLaMA-Factory's chat tab, for a before/after).

A try is a ``GenerationJob`` of kind ``try_it`` run by the generation workers (``generation.py`` hands its
body here): the row keeps the prompt and settings in ``options`` and the answers in ``result``, the base
model's answer as soon as it is written, so the page shows it while the trained model loads.  Both specs
come from the server: the job's own base (its config's ``model``) and its registered final model.
"""

from dataclasses import asdict, dataclass

from django.core.exceptions import ValidationError

from jobs.leases import Lease
from jobs.sending import job_send_on_commit

from ..generation_stages import LOADING, RUNNING
from ..models import GenerationJob, GenerationKind, ModelKind, TrainingJob

MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 256
RECENT = 5
"""Tries shown on a job's page, newest first."""


@dataclass(frozen=True)
class TrySettings:
    """How both models decode the prompt; the page shows these beside the answers."""

    prompt: str
    mode: str = "greedy"
    """greedy or sample."""
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        errors = {}
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            errors["prompt"] = "Type a prompt for the models to answer."
        elif len(self.prompt) > MAX_PROMPT_CHARS:
            errors["prompt"] = f"A prompt has at most {MAX_PROMPT_CHARS} characters, not {len(self.prompt)}."
        if self.mode not in ("greedy", "sample"):
            errors["mode"] = f"mode must be greedy or sample, not {self.mode!r}."
        if not 0 < self.temperature <= 2:
            errors["temperature"] = f"temperature must be above 0 and at most 2, not {self.temperature!r}."
        if not 0 < self.top_p <= 1:
            errors["top_p"] = f"top_p must be above 0 and at most 1, not {self.top_p!r}."
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            errors["max_new_tokens"] = f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS}."
        if errors:
            raise ValidationError(errors)

    @property
    def described(self) -> str:
        if self.mode == "greedy":
            return f"greedy decoding · at most {self.max_new_tokens} new tokens"
        return (
            f"sampled at temperature {self.temperature}, top-p {self.top_p}, seed {self.seed} · "
            f"at most {self.max_new_tokens} new tokens"
        )


def try_it_problem(job: TrainingJob) -> str | None:
    """Why ``job``'s model cannot be tried, or None."""
    model = getattr(job, "produced_model", None)
    if model is None:
        return "The job has no registered final model (it has not succeeded, or its model was deleted)."
    if model.kind != ModelKind.CAUSAL_LM:
        return "Only a language model answers prompts; this job trained a different kind of model."
    return None


def try_it_create(*, job: TrainingJob, settings: TrySettings, created_by=None) -> GenerationJob:
    """Queue a try of ``job``'s final model against its base; ValidationError when it has none."""
    from .generation import GENERATION_JOBS

    if (problem := try_it_problem(job)) is not None:
        raise ValidationError(problem)
    model = job.produced_model
    options = {**asdict(settings), "training_job": job.pk, "base_spec": job.config["model"]}
    try_job = GenerationJob.objects.create(
        project=job.dataset_version.project,
        kind=GenerationKind.TRY_IT,
        model=model,
        model_spec=model.spec,
        options=options,
        created_by=created_by,
    )
    job_send_on_commit(GENERATION_JOBS, try_job.pk)
    return try_job


def tries_for(job: TrainingJob, *, limit: int = RECENT) -> list[GenerationJob]:
    """The latest tries of ``job``'s model, newest first."""
    tries = GenerationJob.objects.filter(kind=GenerationKind.TRY_IT, options__training_job=job.pk)
    return list(tries.order_by("-pk")[:limit])


def try_settings(try_job: GenerationJob) -> TrySettings:
    keys = ("prompt", "mode", "temperature", "top_p", "max_new_tokens", "seed")
    return TrySettings(**{key: try_job.options[key] for key in keys})


def try_it_job_body(*, job: GenerationJob, lease: Lease) -> dict:
    """Answer with the base model, record it, then with the trained one (the generation runner calls this;
    raises LeaseLost when cancelled meanwhile)."""
    from training.engine.lm.generate import GenerationConfig, generate
    from training.engine.lm.models import load_model, load_tokenizer

    settings = try_settings(job)
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        mode=settings.mode,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
    )
    answers = {}
    for done, (side, spec) in enumerate((("base", job.options["base_spec"]), ("trained", job.model_spec))):
        lease.renew(stage=LOADING, progress_done=done, progress_total=2)
        model, tokenizer = load_model(spec), load_tokenizer(spec)
        lease.renew(stage=RUNNING, progress_done=done, progress_total=2)
        answers[side] = generate(model, tokenizer, [settings.prompt], config)[0]
        del model
        lease.renew(progress_done=done + 1, progress_total=2, result=dict(answers))
    return answers
