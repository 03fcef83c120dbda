"""Job services run in this process: launch validation, claim, the run itself, cancel, stale requeue.

Runs use transaction=True: the heartbeat thread has its own database connection and must see the job."""

import datetime as dt
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs.models import JobState
from tests.job_support import requeue_stale
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import Artifact, ArtifactKind, Location, MetricPoint, ModelEntry, TrainingJob
from training.services.jobs import (
    TRAINING_JOBS,
    training_job_cancel,
    training_job_claim,
    training_job_launch,
)
from training.services.runner import training_job_run


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2
    settings.TRAINING_CANCEL_CHECK_SHARE = 1.0  # check the cancel flag before every step, however fast


@pytest.fixture
def base_model(db, tmp_path):
    return tiny_model_entry(tmp_path / "tiny")


@pytest.fixture
def version(project):
    return dataset_version(project)


def _launch(tmp_path, base_model, version, manager, **overrides):
    return training_job_launch(
        params=tiny_params(tmp_path, **overrides),
        base_model=base_model,
        dataset_version=version,
        created_by=manager,
    )


def test_launch_rejects_invalid_config_naming_the_field(tmp_path, base_model, version, manager):
    with pytest.raises(ValidationError) as err:
        _launch(tmp_path, base_model, version, manager, learning_rate=-1.0)
    assert "learning_rate" in err.value.message_dict
    assert "positive" in err.value.message_dict["learning_rate"][0]
    assert not TrainingJob.objects.exists()


def test_launch_rejects_a_base_model_folder_that_is_gone(tmp_path, version, manager):
    missing = ModelEntry.objects.create(name="gone", location=Location.LOCAL, path=str(tmp_path / "nope"))
    with pytest.raises(ValidationError) as err:
        _launch(tmp_path, missing, version, manager)
    assert "config.json" in err.value.message_dict["base_model"][0]


def test_claim_takes_a_queued_job_once(tmp_path, base_model, version, manager):
    job = _launch(tmp_path, base_model, version, manager)
    assert training_job_claim(job_id=job.pk).attempt == 1
    assert training_job_claim(job_id=job.pk) is None
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_run_trains_records_metrics_artifacts_and_registers_the_model(tmp_path, base_model, version, manager):
    job = _launch(tmp_path, base_model, version, manager)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    assert job.step == 6 and job.total_steps == 6
    steps = list(
        MetricPoint.objects.filter(job=job, name="loss").order_by("step").values_list("step", flat=True)
    )
    assert steps == [1, 2, 3, 4, 5, 6]
    assert MetricPoint.objects.filter(job=job, name="eval/rewards/accuracies").count() == 2
    kinds = set(Artifact.objects.filter(job=job).values_list("kind", flat=True))
    assert {
        ArtifactKind.CHECKPOINT,
        ArtifactKind.METRICS,
        ArtifactKind.CONFIG,
        ArtifactKind.EVAL_REPORT,
        ArtifactKind.MODEL,
    } <= kinds
    produced = ModelEntry.objects.get(produced_by=job)
    assert produced.location == Location.JOB and produced.path.endswith("final")
    final, last = Path(produced.path), Path(produced.path).parent / "checkpoint-6"
    assert (final / "model.safetensors").samefile(last / "model.safetensors")  # linked, not copied
    assert not (final / "trainer_state.pt").exists()
    assert training_job_run(job_id=job.pk) is None  # a duplicate delivery does nothing


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_the_run_before_the_next_step_and_keeps_a_checkpoint(
    tmp_path, base_model, version, manager, monkeypatch
):
    job = _launch(tmp_path, base_model, version, manager, max_steps=20, save_steps=None, eval_steps=None)
    from training.services import metrics

    original = metrics.DbMetrics.log

    def log_and_cancel(self, values, step):
        original(self, values, step)
        if step == 3 and "loss" in values:
            training_job_cancel(job=TrainingJob.objects.get(pk=job.pk))

    monkeypatch.setattr(metrics.DbMetrics, "log", log_and_cancel)
    assert training_job_run(job_id=job.pk) == JobState.CANCELLED
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and job.step == 3
    assert MetricPoint.objects.filter(job=job, name="loss").count() == 3
    assert Artifact.objects.filter(
        job=job, kind=ArtifactKind.CHECKPOINT, path__endswith="checkpoint-3"
    ).exists()


def test_cancel_of_a_queued_job_is_immediate_and_no_worker_claims_it(tmp_path, base_model, version, manager):
    job = training_job_cancel(job=_launch(tmp_path, base_model, version, manager))
    assert job.state == JobState.CANCELLED
    assert training_job_run(job_id=job.pk) is None


@pytest.mark.django_db(transaction=True)
def test_invalid_engine_failure_is_recorded_with_traceback(tmp_path, base_model, version, manager):
    job = _launch(tmp_path, base_model, version, manager)
    TrainingJob.objects.filter(pk=job.pk).update(
        config={**job.config, "model": "local:" + str(tmp_path / "x")}
    )
    assert training_job_run(job_id=job.pk) == JobState.FAILED
    job.refresh_from_db()
    assert "no config.json" in job.error and "Traceback" in job.traceback


def test_stale_running_job_is_requeued_then_failed_after_max_attempts(
    tmp_path, base_model, version, manager, settings, django_capture_on_commit_callbacks
):
    settings.TRAINING_MAX_ATTEMPTS = 2
    job = _launch(tmp_path, base_model, version, manager)
    long_ago = timezone.now() - dt.timedelta(hours=1)
    sent = []
    import training.services.jobs as jobs

    jobs.job_enqueue, original = (lambda j: sent.append(j.pk)), jobs.job_enqueue
    try:
        training_job_claim(job_id=job.pk)
        TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
        with django_capture_on_commit_callbacks(execute=True):  # the task goes out after the requeue commits
            assert requeue_stale(TRAINING_JOBS) == [job.pk]
        assert TrainingJob.objects.get(pk=job.pk).state == JobState.QUEUED and sent == [job.pk]
        training_job_claim(job_id=job.pk)
        TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
        assert requeue_stale(TRAINING_JOBS) == []
    finally:
        jobs.job_enqueue = original
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "2 attempts" in job.error


@pytest.mark.django_db(transaction=True)
def test_lora_run_registers_a_merged_model_and_writes_the_evaluation_report(
    tmp_path, base_model, version, manager, client
):
    job = _launch(
        tmp_path,
        base_model,
        version,
        manager,
        lora=True,
        lora_r=2,
        learning_rate=5e-2,
        max_steps=4,
        lora_target_modules=("q_proj", "v_proj"),
    )
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    produced = ModelEntry.objects.get(produced_by=job)
    assert not produced.is_adapter and produced.path.endswith("final")  # the adapter merged into the base
    kinds = set(Artifact.objects.filter(job=job).values_list("kind", flat=True))
    assert {ArtifactKind.ADAPTER, ArtifactKind.MODEL, ArtifactKind.EVAL_REPORT, ArtifactKind.SAMPLES} <= kinds
    client.force_login(manager)
    page = client.get(f"/projects/{version.project_id}/jobs/{job.pk}/evaluation/")
    report = page.context["report"]
    assert report["pairs"] == 8 and 0 <= report["accuracy_after"] <= 1
    assert len(report["generations"]) == 4 and report["heatmap"]["sides"][0]["label"] == "chosen"
    assert 'id="heatmap"' in page.content.decode()
    last_margin = MetricPoint.objects.filter(job=job, name="eval/rewards/margins").order_by("step").last()
    assert report["implicit_margin"] == pytest.approx(last_margin.value)  # the final held-out evaluation's
    shown = f"{'+' if last_margin.value > 0 else ''}{last_margin.value:.3f}"
    assert f'<b id="margin-after">{shown}</b>' in page.content.decode()
    follow_up = _launch(tmp_path, produced, version, manager)
    assert follow_up.config["model"] == f"local:{produced.path}"


@pytest.mark.django_db(transaction=True)
def test_requeued_job_resumes_from_its_checkpoint_and_refills_unflushed_points(
    tmp_path, base_model, version, manager, monkeypatch
):
    import shutil
    from pathlib import Path

    import training.services.jobs as jobs

    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    job = _launch(tmp_path, base_model, version, manager, eval_steps=None)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    # As if the worker had been killed after checkpoint-4 with steps 3-6 still in its buffer.
    shutil.rmtree(Path(job.config["output_dir"]) / "checkpoint-6")
    MetricPoint.objects.filter(job=job, step__gte=3).delete()
    long_ago = timezone.now() - dt.timedelta(hours=1)
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, heartbeat_at=long_ago, step=3)
    assert requeue_stale(TRAINING_JOBS) == [job.pk]
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.attempts == 2 and job.step == 6
    assert "resuming from checkpoint-4 (step 4)" in (Path(job.config["output_dir"]) / "log.txt").read_text()
    steps = list(
        MetricPoint.objects.filter(job=job, name="loss").order_by("step").values_list("step", flat=True)
    )
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.django_db(transaction=True)
def test_run_without_a_final_checkpoint_succeeds_without_registering_a_model(
    tmp_path, base_model, version, manager
):
    job = _launch(
        tmp_path, base_model, version, manager, max_steps=3, save_steps=2, eval_steps=None, save_final=False
    )
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    assert not ModelEntry.objects.filter(produced_by=job).exists()
    assert Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT).count() == 1  # checkpoint-2 only


@pytest.mark.django_db(transaction=True)
def test_fast_slow_dpo_from_the_launch_form_registers_a_model_with_an_evaluation_and_a_next_job(
    tmp_path, base_model, version, manager, client, monkeypatch
):
    import training.services.jobs as jobs
    from tests.training_support import launch_form_data

    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)  # this test is the worker
    client.force_login(manager)
    url = f"/projects/{version.project_id}/jobs/new/?method=fast_slow_dpo"
    data = launch_form_data(
        client.get(url).context,
        base_model,
        version,
        action="launch",
        learning_rate=5e-2,
        lora_r=2,
        lora_target_modules="q_proj, v_proj",
        max_length=64,
    )
    assert client.post(url, data).status_code == 302
    job = TrainingJob.objects.get()
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED, TrainingJob.objects.get(pk=job.pk).error
    produced = ModelEntry.objects.get(produced_by=job)
    assert produced.path.endswith("final") and (Path(produced.path) / "config.json").is_file()
    page = client.get(f"/projects/{version.project_id}/jobs/{job.pk}/evaluation/")
    assert page.status_code == 200 and page.context["report"]["pairs"] == 8
    assert "evaluation report skipped" not in (Path(job.config["output_dir"]) / "log.txt").read_text()
    follow_up = _launch(tmp_path, produced, version, manager)
    assert follow_up.config["model"] == f"local:{produced.path}"
    assert training_job_run(job_id=follow_up.pk) == JobState.SUCCEEDED


def test_launch_refuses_an_eval_generations_count_out_of_range(tmp_path, base_model, version, manager):
    for bad in (-1, 33, "4", True):
        with pytest.raises(ValidationError) as err:
            training_job_launch(
                params=tiny_params(tmp_path),
                base_model=base_model,
                dataset_version=version,
                created_by=manager,
                eval_generations=bad,
            )
        assert "eval_generations" in err.value.message_dict
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_without_held_out_pairs_or_generations_says_why_and_links_to_the_freeze(
    tmp_path, base_model, project, manager, client
):
    from tests.training_support import dataset_version

    no_test = dataset_version(project, train=8, test=0)
    job = training_job_launch(
        params=tiny_params(tmp_path, max_steps=2, eval_steps=None),
        base_model=base_model,
        dataset_version=no_test,
        created_by=manager,
        eval_generations=0,
    )
    assert job.eval_generations == 0 and training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/jobs/{job.pk}/evaluation/")
    html = page.content.decode()
    assert page.context["report"]["pairs"] == 0 and page.context["report"]["generations"] == []
    assert 'id="no-heldout"' in html and f'href="/projects/{project.pk}/versions/"' in html
    assert "Skipped: the job was launched with 0 held-out generations." in html
    assert 'id="accuracy-after"' not in html  # no empty figures


@pytest.mark.django_db(transaction=True)
def test_eval_generations_limits_the_answers_the_evaluation_writes(tmp_path, base_model, version, manager):
    job = training_job_launch(
        params=tiny_params(tmp_path, max_steps=2, eval_steps=None),
        base_model=base_model,
        dataset_version=version,
        created_by=manager,
        eval_generations=2,
    )
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    from training.services.evaluation import evaluation_report

    report = evaluation_report(job=job)
    assert len(report["generations"]) == 2 and report["generations_asked"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_job_reports_each_stage_it_goes_through_and_its_page_names_it(
    tmp_path, base_model, version, manager, client, monkeypatch
):
    from training.services import runner

    seen = []
    real = runner.StageReporter.log_stage

    def spy(self, stage, done=0, total=0):
        real(self, stage, done, total)
        row = TrainingJob.objects.get(pk=self.lease.pk)
        seen.append((row.stage, row.stage_done, row.stage_total))

    monkeypatch.setattr(runner.StageReporter, "log_stage", spy)
    job = _launch(tmp_path, base_model, version, manager, max_steps=2, eval_steps=None)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    stages = [s for s, _, _ in seen]
    order = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert order == ["loading", "reference", "training", "evaluating", "writing"]
    reference = [(d, t) for s, d, t in seen if s == "reference"]
    assert reference[-1][0] == reference[-1][1] > 0  # n of N batches, to the end
    assert ("evaluating", 0, 8) in seen and ("evaluating", 8, 8) in seen  # 4 prompts, base and trained
    log = (Path(job.config["output_dir"]) / "log.txt").read_text()
    assert "computing reference log-probs…" in log and "writing artifacts…" in log
    job.refresh_from_db()
    history = job.stage_history
    assert [s["stage"] for s in history] == order and {s["attempt"] for s in history} == {1}
    assert history[1]["done"] == history[1]["total"] > 0 and history[3]["done"] == 8
    client.force_login(manager)
    finished = client.get(f"/projects/{version.project_id}/jobs/{job.pk}/").content.decode()
    timeline = finished[finished.index('id="job-stages"') :].split("</ol>")[0]
    assert timeline.count('class="done"') == 5 and 'class="current"' not in timeline
    assert "Evaluating on held-out data · 8 of 8" in timeline and "Training · 2 steps" in timeline
    TrainingJob.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING, stage="reference", stage_done=3, stage_total=7
    )
    client.force_login(manager)
    page = client.get(f"/projects/{version.project_id}/jobs/{job.pk}/").content.decode()
    assert "<b>Computing reference log-probs</b> · 3 of 7" in page and "ETA" not in page
