import pytest
from django.core.exceptions import ValidationError

from annotation.models import Candidate, Task, TaskType
from jobs.leases import job_claim
from jobs.models import JobState
from tests.factories import CandidateFactory, ItemFactory
from training.models import GenerationJob
from training.services.generation import (
    GenerationSettings,
    generation_job_create,
    generation_job_run,
    model_sampler,
    seed_for,
)

TEXT = "Paris is the capital of France. It has 2.1 million people.\n3 * 4 = 12\nThe answer is 12."


def echo_factory(calls=None):
    def factory(spec):
        def sample(prompts, settings, seed):
            if calls is not None:
                calls.append((len(prompts), seed))
            return [f"{TEXT} ({i})" for i in range(len(prompts))]

        return sample

    return factory


def make_job(project, captured, **settings):
    with captured(execute=False):
        return generation_job_create(project=project, settings=GenerationSettings(**settings), spec="tiny")


@pytest.mark.parametrize(
    ("task_type", "k", "expected_groups"),
    [
        (TaskType.PAIRWISE, 3, [[0, 1], [0, 2], [1, 2]]),
        (TaskType.RANKING, 3, [[0, 1, 2]]),
        (TaskType.STEPWISE, 2, [[0], [1]]),
        (TaskType.FACTUALITY, 2, [[0], [1]]),
    ],
)
def test_job_creates_candidates_and_the_tasks_of_the_project_type(
    project, django_capture_on_commit_callbacks, task_type, k, expected_groups
):
    project.task_type = task_type
    project.save()
    item = ItemFactory(project=project)
    job = make_job(project, django_capture_on_commit_callbacks, k=k, seed=4)
    generation_job_run(job_id=job.pk, sampler_factory=echo_factory())
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    candidates = list(Candidate.objects.filter(item=item).order_by("position"))
    assert len(candidates) == k
    ids = [c.pk for c in candidates]
    groups = [[ids.index(c) for c in t.candidate_ids] for t in Task.objects.filter(item=item).order_by("id")]
    assert groups == expected_groups
    if task_type == TaskType.STEPWISE:
        assert candidates[0].steps[-2:] == ["3 * 4 = 12", "The answer is 12. (0)"]
    if task_type == TaskType.FACTUALITY:
        assert candidates[0].sentences[:2] == [
            "Paris is the capital of France.",
            "It has 2.1 million people.",
        ]


def test_provenance_records_model_and_sampling_settings(project, django_capture_on_commit_callbacks):
    item = ItemFactory(project=project)
    job = make_job(project, django_capture_on_commit_callbacks, k=2, temperature=0.7, top_p=0.9, seed=11)
    calls = []
    generation_job_run(job_id=job.pk, sampler_factory=echo_factory(calls))
    provenance = Candidate.objects.filter(item=item).order_by("position")[1].provenance
    assert provenance["kind"] == "model" and provenance["spec"] == "tiny"
    assert (provenance["temperature"], provenance["top_p"], provenance["seed"]) == (0.7, 0.9, 11)
    assert provenance["item_seed"] == seed_for(11, item.pk) and provenance["sample_index"] == 1
    assert calls == [(2, seed_for(11, item.pk))]


def test_new_candidates_go_after_existing_ones_and_gold_items_are_skipped(
    project, django_capture_on_commit_callbacks
):
    item = ItemFactory(project=project)
    CandidateFactory(item=item, position=0)
    ItemFactory(project=project, is_gold=True)
    job = make_job(project, django_capture_on_commit_callbacks, k=2)
    generation_job_run(job_id=job.pk, sampler_factory=echo_factory())
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total) == (1, 1), job.error
    assert list(item.candidates.values_list("position", flat=True)) == [0, 1, 2]
    assert job.result == {"items": 1, "candidates": 2, "tasks": 1}


def test_claim_is_one_conditional_update_so_a_second_delivery_does_nothing(
    project, django_capture_on_commit_callbacks
):
    ItemFactory(project=project)
    job = make_job(project, django_capture_on_commit_callbacks, k=2)
    assert job_claim(GenerationJob, pk=job.pk) is not None
    assert job_claim(GenerationJob, pk=job.pk) is None
    generation_job_run(job_id=job.pk, sampler_factory=echo_factory())  # already running: no-op
    assert Candidate.objects.count() == 0


def test_a_failing_sampler_marks_the_job_failed_with_the_error(project, django_capture_on_commit_callbacks):
    ItemFactory(project=project)
    job = make_job(project, django_capture_on_commit_callbacks, k=2)

    def broken(spec):
        raise RuntimeError("model folder vanished")

    generation_job_run(job_id=job.pk, sampler_factory=broken)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "model folder vanished" in job.error
    assert job.finished_at is not None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"k": 0}, "k"),
        ({"temperature": 0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(values, field):
    with pytest.raises(ValidationError) as error:
        GenerationSettings(**values)
    assert field in error.value.message_dict


def test_image_projects_and_single_response_pairwise_are_refused(project):
    with pytest.raises(ValidationError, match="at least 2"):
        generation_job_create(project=project, settings=GenerationSettings(k=1), spec="tiny")
    project.task_type = TaskType.IMAGE_PAIR
    project.save()
    with pytest.raises(ValidationError, match="not Image pair"):
        generation_job_create(project=project, settings=GenerationSettings(k=2), spec="tiny")
    assert not GenerationJob.objects.exists()


def test_creating_a_job_enqueues_it_after_commit(project, django_capture_on_commit_callbacks, celery_eager):
    ItemFactory(project=project)
    with django_capture_on_commit_callbacks(execute=True):
        job = generation_job_create(
            project=project, settings=GenerationSettings(k=2, max_new_tokens=4), spec="tiny"
        )
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert Candidate.objects.filter(item__project=project, provenance__job=job.pk).count() == 2


def test_tiny_model_sampler_is_seeded():
    """The real engine path with a tiny random model: the same seed gives the same samples."""
    sample = model_sampler("tiny")
    settings = GenerationSettings(k=3, max_new_tokens=8, temperature=1.0, top_p=1.0)
    first = sample(["Say something."] * 3, settings, 5)
    assert first == sample(["Say something."] * 3, settings, 5)
    assert len(first) == 3 and len(set(first)) > 1


def test_generation_page_starts_a_job_and_polls_until_finished(
    project, manager_client, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    ItemFactory(project=project)
    assert manager_client.get(reverse("generation-list", args=[project.pk])).status_code == 200
    with django_capture_on_commit_callbacks(execute=False):
        response = manager_client.post(
            reverse("generation-start", args=[project.pk]),
            {"k": 2, "temperature": 0.5, "top_p": 1, "max_new_tokens": 4, "seed": 0},
        )
    job = GenerationJob.objects.get(project=project)
    assert response.url == reverse("generation-detail", args=[project.pk, job.pk])
    assert job.model_spec == "bundled:smollm2-135m-instruct" and job.options["temperature"] == 0.5
    url = reverse("generation-detail", args=[project.pk, job.pk])
    assert manager_client.get(url, HTTP_HX_REQUEST="true").status_code == 200  # queued: keep polling
    generation_job_run(job_id=job.pk, sampler_factory=echo_factory())
    poll = manager_client.get(url, HTTP_HX_REQUEST="true")
    assert poll.status_code == 286 and 'id="job-result"' in poll.content.decode()


def test_generation_form_errors_are_shown_not_raised(project, manager_client):
    from django.urls import reverse

    response = manager_client.post(
        reverse("generation-start", args=[project.pk]),
        {"k": 1, "temperature": 0.5, "top_p": 1, "max_new_tokens": 4, "seed": 0},
    )
    assert response.status_code == 400 and "at least 2 responses" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_annotators_cannot_start_generation(project, annotator_client):
    from django.urls import reverse

    response = annotator_client.post(reverse("generation-start", args=[project.pk]), {"k": 2})
    assert response.status_code == 403


def test_project_page_links_to_generation_and_gold(project, manager_client):
    from django.urls import reverse

    page = manager_client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert reverse("generation-list", args=[project.pk]) in page
    assert reverse("gold-list", args=[project.pk]) in page


def test_a_job_whose_worker_died_is_requeued_and_resumes_after_the_filled_items(
    project, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from tests.job_support import requeue_stale
    from training.services.generation import GENERATION_JOBS

    first, second = ItemFactory(project=project), ItemFactory(project=project)
    job = make_job(project, django_capture_on_commit_callbacks, k=2)
    calls = []

    def dies_after_first_item(spec):
        def sample(prompts, settings, seed):
            if calls:
                raise SystemExit("worker killed")  # not an Exception: the job row stays RUNNING
            calls.append(seed)
            return ["x", "y"]

        return sample

    with pytest.raises(SystemExit):
        generation_job_run(job_id=job.pk, sampler_factory=dies_after_first_item)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.progress_done == 1
    GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert requeue_stale(GENERATION_JOBS) == [job.pk]
    assert len(callbacks) == 1  # enqueued after commit
    calls.clear()
    generation_job_run(job_id=job.pk, sampler_factory=echo_factory(calls))
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.attempts == 2
    assert calls == [(2, seed_for(0, second.pk))]  # only the unfinished item was sampled again
    assert first.candidates.count() == 2 and second.candidates.count() == 2
    assert job.result["resumed_after"] == 1


def test_a_job_stale_too_often_fails_instead_of_looping(project, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from tests.job_support import requeue_stale
    from training.services.generation import GENERATION_JOBS

    job = make_job(project, django_capture_on_commit_callbacks, k=2)
    GenerationJob.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING, attempts=3, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    assert requeue_stale(GENERATION_JOBS) == []
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "3 times" in job.error


def test_an_attempt_that_was_taken_over_stops_without_touching_the_row(
    project, django_capture_on_commit_callbacks
):
    ItemFactory(project=project)
    ItemFactory(project=project)
    job = make_job(project, django_capture_on_commit_callbacks, k=2)

    def taken_over_midway(spec):
        def sample(prompts, settings, seed):
            # meanwhile the job was requeued as stale and claimed by another worker (attempt 2)
            GenerationJob.objects.filter(pk=job.pk).update(attempts=2)
            return ["x", "y"]

        return sample

    generation_job_run(job_id=job.pk, sampler_factory=taken_over_midway)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.finished_at is None  # left to attempt 2
    assert Candidate.objects.filter(item__project=project).count() == 2  # stopped after the first item


def test_a_queued_job_whose_message_was_lost_is_sent_again(project, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from tests.job_support import requeue_stale
    from training.services.generation import GENERATION_JOBS

    job = make_job(project, django_capture_on_commit_callbacks, k=2)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        requeue_stale(GENERATION_JOBS)
    assert not sent
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(GENERATION_JOBS) == []
    assert len(sent) == 1
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.heartbeat_at is not None
