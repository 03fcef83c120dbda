"""The image generation job fills an image-pair project from a registered diffusion model (a tiny SD 1.x
folder in diffusers layout, so the real loading and sampling path runs), through the form and Celery
(eager)."""

from io import BytesIO

import pytest
from django.urls import reverse
from PIL import Image

from annotation.models import Candidate, Item, Task, TaskType
from jobs.models import JobState
from tests.factories import MembershipFactory
from training.engine.diffusion.tiny import save_tiny_sd
from training.models import GenerationJob, GenerationKind, Location, ModelEntry, ModelKind
from training.services.image_generation import (
    ImageGenerationSettings,
    image_generation_job_create,
    image_seed,
)

FORM = {"caption_source": "typed", "captions": "a red square\n\na blue circle\n", "k": 2, "steps": 2}


@pytest.fixture(autouse=True)
def _one_torch_thread(settings):
    """Jobs here share two cores with other tests: one intra-op thread avoids oversubscription."""
    settings.TRAINING_TORCH_THREADS = 1


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def image_project(project):
    project.task_type = TaskType.IMAGE_PAIR
    project.save()
    return project


@pytest.fixture
def tiny_sd(db, tiny_sd_folder):
    return ModelEntry.objects.create(
        name="tiny-sd", kind=ModelKind.DIFFUSION, location=Location.LOCAL, path=str(tiny_sd_folder)
    )


def _start(client, project, model, captured, **fields):
    with captured(execute=True):
        data = {**FORM, "model": model.pk, "guidance_scale": 2.0, "seed": 3, **fields}
        return client.post(reverse("generation-start", args=[project.pk]), data)


def test_image_generation_fills_an_image_pair_project_with_provenance_and_is_reproducible(
    image_project, tiny_sd, manager_client, annotator, celery_eager, django_capture_on_commit_callbacks
):
    response = _start(manager_client, image_project, tiny_sd, django_capture_on_commit_callbacks)
    job = GenerationJob.objects.get(project=image_project)
    assert response.status_code == 302
    assert response.url == reverse("generation-detail", args=[image_project.pk, job.pk])
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.kind == GenerationKind.IMAGE_PAIRS and job.model_spec == f"local:{tiny_sd.path}"
    assert (job.progress_done, job.progress_total) == (4, 4)
    assert job.result == {
        "items": 2,
        "candidates": 4,
        "tasks": 2,
        "duplicates": 0,
        "images": 4,
        "captions": 2,
    }

    items = list(Item.objects.filter(project=image_project).order_by("id"))
    assert [item.prompt for item in items] == ["a red square", "a blue circle"]
    shas = []
    for j, item in enumerate(items):
        candidates = list(Candidate.objects.filter(item=item).select_related("asset").order_by("position"))
        assert len(candidates) == 2
        assert Task.objects.get(item=item).candidate_ids == [c.pk for c in candidates]
        seeds = [image_seed(3, j, i) for i in range(2)]
        assert item.metadata["generation"] == {
            "model": "tiny-sd",
            "spec": job.model_spec,
            "job": job.pk,
            "job_seed": 3,
            "steps": 2,
            "guidance_scale": 2.0,
            "seeds": seeds,
            "k": 2,
        }
        for i, candidate in enumerate(candidates):
            assert candidate.provenance["kind"] == "model" and candidate.provenance["seed"] == seeds[i]
            asset = candidate.asset
            assert (asset.format, asset.width, asset.height) == ("PNG", 32, 32)
            with Image.open(BytesIO(asset.file.read())) as image:
                assert image.size == (32, 32) and image.mode == "RGB"
            shas.append(asset.sha256)
    assert len(set(shas)) == 4, "every image has its own seed"

    # The same settings again give the same bytes: the items are recognised and nothing is added.
    settings = ImageGenerationSettings(
        captions=("a red square", "a blue circle"), k=2, steps=2, guidance_scale=2.0, seed=3
    )
    with django_capture_on_commit_callbacks(execute=True):
        again = image_generation_job_create(project=image_project, settings=settings, model=tiny_sd)
    again.refresh_from_db()
    assert again.state == JobState.SUCCEEDED, again.error
    assert (again.result["items"], again.result["duplicates"]) == (0, 2)
    assert Item.objects.filter(project=image_project).count() == 2

    # The judging screen shows the generated pair.
    MembershipFactory(project=image_project, user=annotator, role="annotator")
    manager_client.force_login(annotator)
    page = manager_client.get(reverse("annotate", args=[image_project.pk])).content.decode()
    assert "a red square" in page
    assert sum(reverse("asset-file", args=[sha]) in page for sha in shas[:2]) == 2


def test_a_cancelled_image_job_adds_no_item(
    image_project, tiny_sd, manager_client, celery_eager, django_capture_on_commit_callbacks, monkeypatch
):
    from training.services import generation, image_generation

    def cancel_then_report(lease, **kwargs):  # the cancel lands while the first caption samples
        job = GenerationJob.objects.get(pk=lease.pk)
        generation.generation_job_cancel(job=job)
        return lambda: lease.renew(progress_done=0, progress_total=kwargs["total"])

    monkeypatch.setattr(image_generation, "_batch_reporter", cancel_then_report)
    _start(manager_client, image_project, tiny_sd, django_capture_on_commit_callbacks)
    job = GenerationJob.objects.get(project=image_project)
    assert job.state == JobState.CANCELLED
    assert not Item.objects.filter(project=image_project).exists()
    page = manager_client.get(reverse("generation-detail", args=[image_project.pk, job.pk]))
    assert "no item was added" in page.content.decode()
