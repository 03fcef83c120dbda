"""The image-pair generation form and service: validation by field, captions, model visibility, cancel."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.models import TaskType
from jobs.models import JobState
from tests.factories import ItemFactory, ProjectFactory
from training.models import GenerationJob, GenerationKind, Location, ModelEntry, ModelKind
from training.services.generation import generation_job_cancel, generation_job_run
from training.services.image_generation import (
    MAX_CAPTION_CHARS,
    MAX_CAPTIONS,
    ImageGenerationSettings,
    captions_parse,
    image_generation_job_create,
    image_seed,
)
from training.services.registry import DIGITS_NAME

VALID = {
    "caption_source": "typed",
    "captions": "a cat\na dog",
    "k": 2,
    "steps": 10,
    "guidance_scale": 3,
    "seed": 0,
}


@pytest.fixture
def image_project(project):
    project.task_type = TaskType.IMAGE_PAIR
    project.save()
    return project


def diffusion_entry(name, **fields):
    return ModelEntry.objects.create(
        name=name, kind=ModelKind.DIFFUSION, location=Location.LOCAL, path=f"/models/{name}", **fields
    )


def post(client, project, **fields):
    return client.post(reverse("generation-start", args=[project.pk]), {**VALID, **fields})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"captions": "\n  \n"}, "captions"),
        ({"captions": "x" * (MAX_CAPTION_CHARS + 1)}, "captions"),
        ({"captions": "\n".join(f"c{i}" for i in range(MAX_CAPTIONS + 1))}, "captions"),
        ({"k": 1}, "k"),
        ({"k": "many"}, "k"),
        ({"steps": 0}, "steps"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"caption_source": "files"}, "caption_source"),
        ({"caption_source": "items"}, "caption_source"),  # the project has no items yet
    ],
)
def test_bad_image_generation_input_is_a_400_naming_the_field(
    image_project, manager_client, fields, field, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = post(manager_client, image_project, **fields)
    assert response.status_code == 400
    assert field in response.context["form"].errors, response.context["form"].errors
    assert not GenerationJob.objects.exists()


def test_another_projects_model_is_not_offered_and_is_refused(
    image_project, manager_client, django_capture_on_commit_callbacks
):
    mine = diffusion_entry("mine")
    theirs = diffusion_entry("theirs", project=ProjectFactory())
    text = ModelEntry.objects.create(
        name="an lm", kind=ModelKind.CAUSAL_LM, location=Location.LOCAL, path="/x"
    )
    page = manager_client.get(reverse("generation-list", args=[image_project.pk]))
    offered = set(page.context["form"].fields["model"].queryset)
    assert mine in offered and theirs not in offered and text not in offered
    assert "Generate image pairs" in page.content.decode()
    for refused in (theirs, text):
        with django_capture_on_commit_callbacks(execute=False):
            response = post(manager_client, image_project, model=refused.pk)
        assert response.status_code == 400 and "model" in response.context["form"].errors
    assert not GenerationJob.objects.exists()


def test_the_form_queues_a_job_with_the_captions_of_the_projects_items(
    image_project, manager_client, django_capture_on_commit_callbacks
):
    for caption in ("a cat", "a dog", "a cat"):
        ItemFactory(project=image_project, prompt=caption)
    ItemFactory(project=image_project, prompt="gold", is_gold=True)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(manager_client, image_project, caption_source="items", model="", k=3, seed=9)
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and len(callbacks) == 1
    assert job.kind == GenerationKind.IMAGE_PAIRS and job.model.name == DIGITS_NAME
    assert job.model_spec == "bundled:digits"
    assert job.options == {
        "captions": ["a cat", "a dog"],
        "k": 3,
        "steps": 10,
        "guidance_scale": 3.0,
        "seed": 9,
    }


def test_a_text_project_keeps_the_text_form(project, manager_client):
    page = manager_client.get(reverse("generation-list", args=[project.pk]))
    assert "temperature" in page.context["form"].fields and "Generate candidates" in page.content.decode()


def test_image_generation_refuses_text_projects_and_text_models(project, image_project):
    settings = ImageGenerationSettings(captions=("a cat",))
    with pytest.raises(ValidationError):
        image_generation_job_create(project=ProjectFactory(task_type=TaskType.PAIRWISE), settings=settings)
    lm = ModelEntry.objects.create(name="lm", kind=ModelKind.CAUSAL_LM, location=Location.LOCAL, path="/x")
    with pytest.raises(ValidationError) as error:
        image_generation_job_create(project=image_project, settings=settings, model=lm)
    assert "model" in error.value.message_dict


def test_settings_bound_the_images_of_one_job():
    with pytest.raises(ValidationError) as error:
        ImageGenerationSettings(captions=tuple(f"c{i}" for i in range(40)), k=8)
    assert "k" in error.value.message_dict
    assert captions_parse("  a cat \n\n a dog\n") == ("a cat", "a dog")


def test_image_seeds_are_distinct_and_depend_on_the_job_seed_only():
    seeds = {image_seed(0, j, i) for j in range(8) for i in range(4)}
    assert len(seeds) == 32 and image_seed(0, 1, 2) == image_seed(0, 1, 2) != image_seed(1, 1, 2)


def test_a_queued_job_cancelled_is_never_run(image_project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job = image_generation_job_create(
            project=image_project, settings=ImageGenerationSettings(captions=("a",))
        )
    assert generation_job_cancel(job=job)
    generation_job_run(job_id=job.pk)  # a late delivery finds nothing to claim
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and job.attempts == 0
    assert not generation_job_cancel(job=job)


def test_a_failing_model_fails_the_job_and_adds_nothing(image_project, django_capture_on_commit_callbacks):
    entry = diffusion_entry("missing")
    settings = ImageGenerationSettings(captions=("a",))
    with django_capture_on_commit_callbacks(execute=False):
        job = image_generation_job_create(project=image_project, settings=settings, model=entry)
    generation_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "/models/missing" in job.error
    assert not image_project.items.exists()


def test_the_generate_link_shows_on_image_pair_projects(image_project, manager_client):
    page = manager_client.get(reverse("project-detail", args=[image_project.pk]))
    assert reverse("generation-list", args=[image_project.pk]) in page.content.decode()
