"""The launch form, the job page's metrics feed and downloads, compare, and the project links."""

import csv
import io
import json

import pytest
import yaml

from jobs.models import JobState
from tests.factories import UserFactory
from tests.training_support import dataset_version, launch_form_data, tiny_model_entry, tiny_params
from training.engine import config_from_dict
from training.models import TrainingJob
from training.services.jobs import training_job_launch
from training.services.metrics import metrics_write_batch


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture
def base_model(db, tmp_path):
    return tiny_model_entry(tmp_path / "tiny")


@pytest.fixture
def version(project):
    return dataset_version(project)


@pytest.fixture
def job(tmp_path, base_model, version, manager):
    return training_job_launch(
        params=tiny_params(tmp_path), base_model=base_model, dataset_version=version, created_by=manager
    )


def test_launch_form_shows_every_config_field_with_help_and_default(manager_client, project, version):
    page = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=ipo")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="tau"' in html and "the target margin is 1/(2τ)" in html
    assert 'name="learning_rate"' in html and "AdamW peak learning rate" in html
    assert 'value="5e-07"' in html or 'value="5e-7"' in html
    assert 'name="train_file"' not in html and 'name="output_dir"' not in html
    hidden = {"run_token"}
    missing = [n for n in page.context["form"].fields if n not in hidden and f'name="{n}"' not in html]
    assert not missing  # a form field the page does not render could never be posted


def test_rdpo_form_prefills_epsilon_with_the_versions_flip_rate(manager_client, project, version):
    form = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=rdpo&version={version.pk}").context[
        "form"
    ]
    assert form.fields["epsilon"].initial == pytest.approx(0.12)


def test_rdpo_form_prefers_the_flip_rate_measured_on_gold(manager_client, project):
    stats = {
        "examples": 32,
        "label_flip_rate": 0.12,
        "label_flip_rate_gold": 0.2,
        "label_flip_gold_votes": 40,
    }
    gold = dataset_version(project, stats=stats)
    no_votes = dataset_version(project, stats={**stats, "label_flip_gold_votes": 0})
    url = f"/projects/{project.pk}/jobs/new/?method=rdpo&version="
    assert manager_client.get(url + str(gold.pk)).context["form"].fields["epsilon"].initial == pytest.approx(
        0.2
    )
    form = manager_client.get(url + str(no_votes.pk)).context["form"]
    assert form.fields["epsilon"].initial == pytest.approx(0.12)


def test_launch_form_shows_invalid_values_inline_and_creates_nothing(
    manager_client, project, version, base_model
):
    url = f"/projects/{project.pk}/jobs/new/?method=dpo"
    data = launch_form_data(manager_client.get(url).context, base_model, version, beta="-2", action="launch")
    page = manager_client.post(url, data)
    assert page.status_code == 422
    field_errors = page.context["form"].errors
    assert "beta" in field_errors and "positive" in field_errors["beta"][0]
    assert 'id="field-beta"' in page.content.decode() and "field-error" in page.content.decode()
    assert not TrainingJob.objects.exists()


def test_preview_shows_the_exact_yaml_the_worker_runs_then_launch_stores_it(
    manager_client, project, version, base_model
):
    url = f"/projects/{project.pk}/jobs/new/?method=dpo"
    data = launch_form_data(manager_client.get(url).context, base_model, version, action="preview")
    preview = manager_client.post(url, data)
    assert preview.status_code == 200
    shown = yaml.safe_load(preview.context["preview"])
    assert config_from_dict(shown).max_steps == 4
    launched = manager_client.post(url, {**data, "action": "launch"})
    job = TrainingJob.objects.get()
    assert launched.status_code == 302 and launched["Location"].endswith(f"/jobs/{job.pk}/")
    assert config_from_dict(shown) == config_from_dict(job.config)
    assert job.state == JobState.QUEUED and job.total_steps == 3  # 24 pairs / default batch 8


def test_clone_prefills_the_form_from_the_old_jobs_config(manager_client, project, job):
    page = manager_client.get(f"/projects/{project.pk}/jobs/{job.pk}/clone/", follow=True)
    form = page.context["form"]
    assert form.fields["max_steps"].initial == 6 and form.fields["learning_rate"].initial == 1e-3
    assert (
        form.initial["base_model"] == job.base_model_id
        and form.initial["dataset_version"] == job.dataset_version_id
    )


def test_annotators_cannot_launch(annotator_client, project, version):
    assert annotator_client.get(f"/projects/{project.pk}/jobs/new/").status_code == 403


def test_outsiders_cannot_see_a_job(client, project, job):
    client.force_login(UserFactory(username="outsider"))
    assert client.get(f"/projects/{project.pk}/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/api/jobs/{job.pk}").status_code == 404


def test_metrics_feed_returns_only_points_after_the_cursor_and_stops_when_the_job_ended(
    manager_client, project, job
):
    metrics_write_batch(
        job_id=job.pk, points=[(s, n, s * 0.5, 1000.0 + s) for s in (1, 2, 3) for n in ("loss", "grad_norm")]
    )
    url = f"/projects/{project.pk}/jobs/{job.pk}/metrics/"
    body = manager_client.get(url, {"after": 1}).json()
    assert body["points"]["loss"] == [[2, 1.0, 1002.0], [3, 1.5, 1003.0]] and body["cursor"] == 3
    assert manager_client.get(url, {"after": 3}).json()["points"] == {}
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    assert manager_client.get(url, {"after": 3}).status_code == 286


def test_progress_fragment_stops_polling_once_the_job_ended(manager_client, project, job):
    url = f"/projects/{project.pk}/jobs/{job.pk}/"
    assert manager_client.get(url, HTTP_HX_REQUEST="true").status_code == 200
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.FAILED, error="boom")
    fragment = manager_client.get(url, HTTP_HX_REQUEST="true")
    assert fragment.status_code == 286 and "boom" in fragment.content.decode()


def test_metrics_download_as_csv_and_json(manager_client, project, job):
    metrics_write_batch(
        job_id=job.pk, points=[(1, "loss", 0.7, 1.0), (2, "loss", 0.6, 2.0), (2, "eval/loss", 0.65, 2.0)]
    )
    text = manager_client.get(f"/projects/{project.pk}/jobs/{job.pk}/metrics.csv").getvalue().decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["step", "name", "value", "wall_time"] and len(rows) == 4
    data = json.loads(manager_client.get(f"/projects/{project.pk}/jobs/{job.pk}/metrics.json").getvalue())
    assert {"step": 2, "name": "eval/loss", "value": 0.65, "wall_time": 2.0} in data


def test_compare_lists_config_differences(
    manager_client, project, job, tmp_path, base_model, version, manager
):
    other = training_job_launch(
        params=tiny_params(tmp_path, beta=0.3),
        base_model=base_model,
        dataset_version=version,
        created_by=manager,
    )
    metrics_write_batch(job_id=job.pk, points=[(1, "loss", 0.7, 1.0)])
    page = manager_client.get(
        f"/projects/{project.pk}/jobs/compare/", {"jobs": [job.pk, other.pk], "metric": "loss"}
    )
    assert page.status_code == 200
    assert page.context["diffs"] == {"beta": {job.pk: 0.1, other.pk: 0.3}}
    traces = {trace["name"]: trace["y"] for trace in page.context["traces"]}
    assert traces == {f"job {job.pk} · dpo": [0.7], f"job {other.pk} · dpo": []}


def test_project_page_links_versions_to_their_jobs_and_jobs_to_their_version(
    manager_client, project, job, version
):
    project_page = manager_client.get(f"/projects/{project.pk}/").content.decode()
    assert f"/projects/{project.pk}/jobs/?version={version.pk}" in project_page
    listing = manager_client.get(f"/projects/{project.pk}/jobs/", {"version": version.pk}).content.decode()
    assert f"/projects/{project.pk}/jobs/{job.pk}/" in listing
    detail = manager_client.get(f"/projects/{project.pk}/jobs/{job.pk}/").content.decode()
    assert f"/projects/{project.pk}/versions/{version.pk}/" in detail and job.base_model.name in detail


def test_plotly_is_served_from_the_plotly_package(client, manager):
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/plotly.min.js").endswith("plotly/package_data/plotly.min.js")


def test_member_roles_are_checked_for_cancel(annotator_client, project, job):
    assert annotator_client.post(f"/projects/{project.pk}/jobs/{job.pk}/cancel/").status_code == 403
    assert TrainingJob.objects.get(pk=job.pk).cancel_requested is False


def test_a_metric_batch_keeps_stored_points_stores_nan_as_null_and_spans_statements(job):
    from training.models import MetricPoint

    assert metrics_write_batch(job_id=job.pk, points=[(1, "loss", 0.5, 1.0)]) == 1
    many = [(step, "loss", 0.1, 2.0) for step in range(1, 1201)] + [(2, "grad_norm", float("nan"), 2.0)]
    metrics_write_batch(job_id=job.pk, points=many)
    stored = dict(MetricPoint.objects.filter(job=job, name="loss").values_list("step", "value"))
    assert len(stored) == 1200 and stored[1] == 0.5 and stored[2] == 0.1
    assert MetricPoint.objects.get(job=job, name="grad_norm").value is None


def test_a_method_is_refused_on_a_dataset_kind_it_cannot_train_on_before_anything_is_queued(
    manager_client, manager, project, version, base_model, tmp_path
):
    from django.core.management import CommandError, call_command

    project.task_type = "image_pair"
    project.save()
    url = f"/projects/{project.pk}/jobs/new/?method=dpo"
    data = launch_form_data(manager_client.get(url).context, base_model, version, action="launch")
    page = manager_client.post(url, data)
    assert page.status_code == 422
    error = page.context["form"].errors["dataset_version"][0]
    assert "dpo trains on pairwise, ranking, stepwise, factuality datasets" in error and "image_pair" in error
    api = manager_client.post(
        "/api/jobs",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "config": {"method": "dpo"}},
        content_type="application/json",
    )
    assert api.status_code == 422 and "image_pair dataset" in str(api.json()["detail"])
    config = tmp_path / "job.yaml"
    config.write_text("method: mask_dpo\n")
    project.task_type = "pairwise"
    project.save()
    with pytest.raises(CommandError, match="mask_dpo trains on factuality datasets"):
        call_command(
            "launch_job", str(config), "--dataset-version", str(version.pk), "--base-model", "tiny-llama"
        )
    assert not TrainingJob.objects.exists()


def _offered(page) -> set[str]:
    return {m["name"] for group in page.context["method_groups"] for m in group["methods"]}


def test_the_launch_form_offers_the_methods_of_the_projects_kind(manager_client, project, version):
    page = manager_client.get(f"/projects/{project.pk}/jobs/new/")
    assert "dpo" in _offered(page) and "curry_dpo" not in _offered(page)
    project.task_type = "ranking"
    project.save()
    page = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=curry_dpo")
    assert {"dpo", "curry_dpo"} <= _offered(page) and "mask_dpo" not in _offered(page)


def test_the_launch_form_builds_the_engine_config_once_per_post(
    manager_client, project, version, base_model, monkeypatch
):
    from training import forms
    from training.services import jobs

    calls = []
    real = jobs.job_plan_build

    def counted(**kwargs):
        calls.append(kwargs["params"]["method"])
        return real(**kwargs)

    monkeypatch.setattr(forms, "job_plan_build", counted)
    monkeypatch.setattr(jobs, "job_plan_build", counted)
    url = f"/projects/{project.pk}/jobs/new/?method=dpo"
    data = launch_form_data(manager_client.get(url).context, base_model, version, action="launch")
    assert manager_client.post(url, data).status_code == 302
    assert calls == ["dpo"]
