"""On-policy image pairs: a registered diffusion model samples K images per caption into an image-pair
project.

The job is a ``GenerationJob`` of kind ``image_pairs`` on the same job core as text generation (lease,
heartbeat, progress in images, recovery); ``generation.generation_job_run`` dispatches here.  Image ``i`` of
caption ``j`` is sampled with ``image_seed(seed, j, i)`` (seeded DDIM, ``engine/diffusion/sample.py``), so
the same settings give the same bytes.  The images are kept in memory (at most ``MAX_IMAGES``) and written
at the end through annotation's ``image_pair_items_add`` in one transaction that also records the job's
success: a job that fails, is cancelled or loses its worker leaves no item behind, and its next attempt
samples everything again.  Each caption becomes one item with its K images as candidates and one task per
pair of them (all K·(K−1)/2 pairs, the rule text generation uses for pairwise projects; ``MAX_K`` bounds it).
"""

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError

from annotation.models import Project, TaskType
from annotation.services.candidates import items_to_fill
from annotation.services.generated_images import GeneratedImages, image_pair_items_add
from jobs.leases import Lease, LeaseLost
from jobs.models import JobState
from jobs.sending import job_send_on_commit

from ..generation_stages import RUNNING
from ..models import GenerationJob, GenerationKind, ModelEntry, ModelKind
from .registry import model_entry_ensure_digits

MAX_CAPTIONS = 64
MAX_CAPTION_CHARS = 300
MAX_K = 8
MAX_IMAGES = 256
"""Captions × K per job: the images wait in memory until the job's one write."""
SAMPLE_BATCH = 4


@dataclass(frozen=True)
class ImageGenerationSettings:
    """How image pairs are sampled; stored on the job (``options``) and in each image's provenance."""

    captions: tuple[str, ...] = field(default=())
    """What to draw, 1..MAX_CAPTIONS non-empty captions of at most MAX_CAPTION_CHARS characters."""
    k: int = 2
    """Images per caption (2..MAX_K); every pair of them becomes a task."""
    steps: int = 25
    """DDIM sampling steps (1..200)."""
    guidance_scale: float = 3.0
    """Classifier-free guidance (1 = none, at most 20)."""
    seed: int = 0
    """Base seed; image i of caption j is sampled with image_seed(seed, j, i)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "captions", tuple(self.captions))
        errors = {}
        if caption_error := _captions_error(self.captions):
            errors["captions"] = caption_error
        if not isinstance(self.k, int) or not 2 <= self.k <= MAX_K:
            errors["k"] = f"k must be an integer from 2 to {MAX_K}, not {self.k!r}."
        elif len(self.captions) * self.k > MAX_IMAGES:
            errors["k"] = f"captions × k is {len(self.captions) * self.k}; at most {MAX_IMAGES} images a job."
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 200:
            errors["steps"] = f"steps must be an integer from 1 to 200, not {self.steps!r}."
        if not 1 <= self.guidance_scale <= 20:
            errors["guidance_scale"] = f"guidance_scale must be from 1 to 20, not {self.guidance_scale!r}."
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            errors["seed"] = f"seed must be an integer from 0 to 2147483647, not {self.seed!r}."
        if errors:
            raise ValidationError(errors)


def _captions_error(captions: Sequence[str]) -> str | None:
    if not captions:
        return "Give at least one caption."
    if len(captions) > MAX_CAPTIONS:
        return f"{len(captions)} captions; at most {MAX_CAPTIONS} a job."
    for number, caption in enumerate(captions, start=1):
        if not isinstance(caption, str) or not caption.strip():
            return f"Caption {number} is empty."
        if len(caption) > MAX_CAPTION_CHARS:
            return f"Caption {number} has {len(caption)} characters; at most {MAX_CAPTION_CHARS}."
    return None


def captions_parse(text: str) -> tuple[str, ...]:
    """Typed captions, one per line (blank lines dropped, spaces trimmed)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def captions_of_project(*, project: Project) -> tuple[str, ...]:
    """The distinct captions of the project's items (gold excepted), in item order."""
    prompts = items_to_fill(project=project).exclude(prompt="").values_list("prompt", flat=True)
    return tuple(dict.fromkeys(prompt.strip() for prompt in prompts if prompt.strip()))


def image_seed(base: int, caption_index: int, sample_index: int) -> int:
    """The seed of image ``sample_index`` of caption ``caption_index`` in a job seeded ``base``."""
    digest = hashlib.sha256(f"{base}:{caption_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def image_generation_job_create(
    *, project: Project, settings: ImageGenerationSettings, model: ModelEntry | None = None, created_by=None
) -> GenerationJob:
    """Queue a job; ``model`` is a diffusion ModelEntry (the embedded digits model when None)."""
    job = _job_row(project=project, settings=settings, model=model, created_by=created_by)
    from .generation import GENERATION_JOBS

    job_send_on_commit(GENERATION_JOBS, job.pk)
    return job


def image_generation_run_now(
    *, project: Project, settings: ImageGenerationSettings, model: ModelEntry | None = None, created_by=None
) -> GenerationJob:
    """Create the job and run it in this process, without a worker (``load_demo`` fills its demo project
    before the worker is up); returns the finished job (its error on the row, as a worker would leave it)."""
    from .generation import generation_job_run

    job = _job_row(project=project, settings=settings, model=model, created_by=created_by)
    generation_job_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def _job_row(*, project, settings, model, created_by) -> GenerationJob:
    if project.task_type != TaskType.IMAGE_PAIR:
        raise ValidationError(
            f"Image generation fills image-pair projects, not {project.get_task_type_display()}."
        )
    model = model or model_entry_ensure_digits()
    if model.kind != ModelKind.DIFFUSION:
        raise ValidationError(
            {"model": f"{model.name} is a {model.get_kind_display()}, not a diffusion model."}
        )
    return GenerationJob.objects.create(
        project=project,
        kind=GenerationKind.IMAGE_PAIRS,
        model=model,
        model_spec=model.spec,
        options=asdict(settings),
        created_by=created_by,
    )


def image_pairs_job_run(*, job: GenerationJob, lease: Lease) -> None:
    """The job body: sample, then write the items and the job's success in one transaction (raises
    LeaseLost when the job was cancelled or taken over meanwhile: then nothing is written)."""
    settings = ImageGenerationSettings(**job.options)
    total = len(settings.captions) * settings.k
    lease.renew(progress_done=0, progress_total=total)
    with lease.heartbeat(django_settings.ANNOTATION_JOB_HEARTBEAT_SECONDS):
        groups = _sample_groups(job=job, settings=settings, lease=lease, total=total)

    def finish(counts: dict) -> None:
        result = {**counts, "images": total, "captions": len(settings.captions)}
        if not lease.finish(JobState.SUCCEEDED, result=result, progress_done=total):
            raise LeaseLost(f"generation job {job.pk} was cancelled or taken over before its write")

    image_pair_items_add(
        project=job.project, groups=groups, source=f"generation job {job.pk}", before_commit=finish
    )


def _sample_groups(*, job: GenerationJob, settings: ImageGenerationSettings, lease: Lease, total: int):
    from training.engine.diffusion import models as diffusion_models
    from training.engine.diffusion.sample import png_bytes, sample_images, to_pil

    components = diffusion_models.load_diffusion(job.model_spec)
    done = 0
    groups = []
    for j, caption in enumerate(settings.captions):
        seeds = [image_seed(settings.seed, j, i) for i in range(settings.k)]
        images = sample_images(
            components,
            seeds=seeds,
            captions=[caption] * settings.k if components.conditioned else None,
            steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            batch_size=SAMPLE_BATCH,
            between_batches=_batch_reporter(lease, start=done, k=settings.k, total=total),
        )
        done += settings.k
        lease.renew(stage=RUNNING, progress_done=done, progress_total=total)
        groups.append(_group(job, settings, caption, seeds, [png_bytes(im) for im in to_pil(images)]))
    return groups


def _batch_reporter(lease: Lease, *, start: int, k: int, total: int):
    """Called before each batch of a caption: records the images finished so far (raises LeaseLost once
    the job was cancelled, so a cancel stops the job before its next batch)."""
    offsets = iter(range(0, k, SAMPLE_BATCH))
    return lambda: lease.renew(stage=RUNNING, progress_done=start + next(offsets), progress_total=total)


def _group(
    job: GenerationJob, settings: ImageGenerationSettings, caption: str, seeds, pngs
) -> GeneratedImages:
    model_name = job.model.name if job.model else job.model_spec
    common = {
        "model": model_name,
        "spec": job.model_spec,
        "job": job.pk,
        "job_seed": settings.seed,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
    }
    provenance = [{**common, "seed": seed, "sample_index": i} for i, seed in enumerate(seeds)]
    return GeneratedImages(
        caption=caption,
        images=pngs,
        provenance=provenance,
        metadata={"generation": {**common, "seeds": list(seeds), "k": settings.k}},
    )
