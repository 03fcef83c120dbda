"""The "try it" box of a trained model's job page: a prompt answered by the base and the trained model on a
generation worker, with the same settings; bad input is a 400 naming the field; only members see it. Also the
stage a generation job reports while it loads its model and while it works."""

import pytest

from jobs.models import JobState
from tests.factories import ItemFactory, UserFactory
from tests.training_support import succeeded_job, tiny_params
from training.engine.lm.generate import GenerationConfig, generate
from training.engine.lm.models import load_model, load_tokenizer
from training.generation_stages import stage_line
from training.models import GenerationJob, GenerationKind
from training.services.generation import GenerationSettings, generation_job_create, generation_job_run
from training.services.jobs import training_job_launch

PROMPT = "cat dog <b>sun</b>"


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture
def trained(tmp_path, project, manager):
    return succeeded_job(tmp_path, project, manager)


def _urls(job):
    project = job.dataset_version.project_id
    return f"/projects/{project}/jobs/{job.pk}/", f"/projects/{project}/jobs/{job.pk}/try/"


def _answer(spec, prompt, config):
    return generate(load_model(spec), load_tokenizer(spec), [prompt], config)[0]


def test_a_member_tries_the_model_and_sees_both_answers_with_the_settings(
    trained, annotator_client, django_capture_on_commit_callbacks
):
    page, start = _urls(trained)
    assert 'id="try-it-form"' in annotator_client.get(page).content.decode()
    form = {"prompt": PROMPT, "mode": "sample", "temperature": "0.9", "top_p": "0.8"}
    form.update(max_new_tokens="12", seed="3")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = annotator_client.post(start, form, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and len(sent) == 1  # queued for a worker once the row is committed
    try_job = GenerationJob.objects.get(kind=GenerationKind.TRY_IT)
    assert try_job.options["training_job"] == trained.pk and try_job.model == trained.produced_model
    assert try_job.options["base_spec"] == trained.base_model.spec

    generation_job_run(job_id=try_job.pk)
    try_job.refresh_from_db()
    assert try_job.state == JobState.SUCCEEDED, try_job.error
    config = GenerationConfig(max_new_tokens=12, mode="sample", temperature=0.9, top_p=0.8, seed=3)
    assert try_job.result == {
        "base": _answer(trained.base_model.spec, PROMPT, config),
        "trained": _answer(trained.produced_model.spec, PROMPT, config),
    }
    assert try_job.result["base"] != try_job.result["trained"]  # other weights answer otherwise

    shown = annotator_client.get(f"{start}{try_job.pk}/", HTTP_HX_REQUEST="true")
    assert shown.status_code == 286  # finished: htmx stops polling
    html = shown.content.decode()
    assert "sampled at temperature 0.9, top-p 0.8, seed 3 · at most 12 new tokens" in html
    assert "cat dog &lt;b&gt;sun&lt;/b&gt;" in html and "<b>sun</b>" not in html
    assert f"Trained · {trained.produced_model.name}" in html
    assert 'id="try-' + str(try_job.pk) in annotator_client.get(page).content.decode()  # listed on the page


def test_a_try_that_has_not_run_polls_and_says_it_waits(trained, manager_client):
    _, start = _urls(trained)
    manager_client.post(
        start,
        {
            "prompt": "hello",
            "mode": "greedy",
            "temperature": "0.7",
            "top_p": "0.9",
            "max_new_tokens": "8",
            "seed": "0",
        },
    )
    try_job = GenerationJob.objects.get(kind=GenerationKind.TRY_IT)
    shown = manager_client.get(f"{start}{try_job.pk}/", HTTP_HX_REQUEST="true")
    assert shown.status_code == 200 and 'hx-trigger="every 1s"' in shown.content.decode()
    assert "greedy decoding · at most 8 new tokens" in shown.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", "   ", "This field is required."),
        ("max_new_tokens", "999", "less than or equal to 256"),
        ("mode", "beam", "Select a valid choice"),
        ("temperature", "0", "greater than or equal to 0.01"),
    ],
)
def test_bad_settings_are_a_400_naming_the_field_and_queue_nothing(
    trained, manager_client, field, value, message
):
    _, start = _urls(trained)
    form = {"prompt": "hello", "mode": "greedy", "temperature": "0.7", "top_p": "0.9", "max_new_tokens": "8"}
    form.update(seed="0", **{field: value})
    response = manager_client.post(start, form, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not GenerationJob.objects.filter(kind=GenerationKind.TRY_IT).exists()


def test_a_job_without_a_language_model_offers_no_box_and_refuses_a_try(trained, manager_client):
    page, start = _urls(trained)
    trained.produced_model.delete()
    assert 'id="try-it-form"' not in manager_client.get(page).content.decode()
    form = {"prompt": "hi", "mode": "greedy", "temperature": "0.7", "top_p": "0.9", "max_new_tokens": "8"}
    response = manager_client.post(start, {**form, "seed": "0"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "no registered final model" in response.content.decode()


def test_an_outsider_cannot_try_or_read_a_try(trained, client, manager_client):
    _, start = _urls(trained)
    form = {"prompt": "hi", "mode": "greedy", "temperature": "0.7", "top_p": "0.9", "max_new_tokens": "8"}
    manager_client.post(start, {**form, "seed": "0"})
    try_job = GenerationJob.objects.get(kind=GenerationKind.TRY_IT)
    outsider = UserFactory(username="outsider")
    client.force_login(outsider)
    assert client.post(start, {**form, "seed": "0"}).status_code == 404
    assert client.get(f"{start}{try_job.pk}/").status_code == 404
    assert GenerationJob.objects.filter(kind=GenerationKind.TRY_IT).count() == 1


def test_a_try_is_only_read_through_its_own_job(trained, tmp_path, project, manager, manager_client):
    other = training_job_launch(
        params=tiny_params(tmp_path),
        base_model=trained.base_model,
        dataset_version=trained.dataset_version,
        created_by=manager,
    )
    _, start = _urls(trained)
    form = {"prompt": "hi", "mode": "greedy", "temperature": "0.7", "top_p": "0.9", "max_new_tokens": "8"}
    manager_client.post(start, {**form, "seed": "0"})
    try_job = GenerationJob.objects.get(kind=GenerationKind.TRY_IT)
    _, other_start = _urls(other)
    assert manager_client.get(f"{other_start}{try_job.pk}/").status_code == 404


def test_a_generation_job_reports_loading_while_its_model_loads_then_its_work(
    project, django_capture_on_commit_callbacks
):
    """The stage is read from the row while the worker loads the model and while it samples."""
    ItemFactory(project=project)
    ItemFactory(project=project)
    with django_capture_on_commit_callbacks(execute=False):
        job = generation_job_create(project=project, settings=GenerationSettings(k=2), spec="tiny")
    seen = []

    def factory(spec):
        seen.append(GenerationJob.objects.get(pk=job.pk).stage)  # the model is loading now

        def sample(prompts, settings, seed):
            row = GenerationJob.objects.get(pk=job.pk)
            seen.append(
                stage_line(kind=row.kind, stage=row.stage, done=row.progress_done, total=row.progress_total)
            )
            return ["an answer", "another answer"]

        return sample

    generation_job_run(job_id=job.pk, sampler_factory=factory)
    assert seen == ["loading", "sampling candidates: item 1 of 2", "sampling candidates: item 2 of 2"]
    assert stage_line(kind="candidates", stage="loading", done=0, total=0).startswith("loading the model")
