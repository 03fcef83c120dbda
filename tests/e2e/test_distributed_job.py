"""A manager launches a DPO job with two FSDP training processes from the form: the worker runs torchrun,
the dashboard draws one set of live charts (every step once, rank 0's) and ends with the job succeeded."""

import pytest

from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.e2e.test_ppo_job import DONE, POINTS, STATE_IS, _launch, _loss_points
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running
from tests.training_support import dataset_version, tiny_model_entry
from training.models import MetricPoint, TrainingJob
from training.services.paths import log_path

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STEPS = 40


def test_a_two_process_job_from_the_form_shows_one_set_of_charts_and_finishes(
    page, live_server, login, settings, tmp_path, screenshot_dir
):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="scaler")
    project = ProjectFactory(name="Two processes")
    MembershipFactory(project=project, user=user, role="manager")
    version, base = dataset_version(project), tiny_model_entry(tmp_path / "tiny")
    page.context.add_init_script(RECORD_VIOLATIONS)
    env = native_env(
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TRAINING_METRICS_FLUSH_SECONDS="0.2",
        TRAINING_TORCH_THREADS="2",
    )
    with running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log"):
        login(page, user.username)
        job_id = _launch(
            page,
            live_server,
            project,
            "dpo",
            {"base_model": base.pk, "dataset_version": version.pk, "strategy": "fsdp"},
            {
                "processes_per_node": 2,
                "batch_size": 4,
                "epochs": 100,
                "max_steps": STEPS,
                "learning_rate": 0.001,
                "max_length": 64,
                "save_steps": 20,
            },
        )
        assert TrainingJob.objects.get(pk=job_id).config["processes_per_node"] == 2
        page.wait_for_function(POINTS, timeout=120_000)
        page.wait_for_function(STATE_IS, arg="Succeeded", timeout=240_000)
        page.wait_for_function(DONE, timeout=30_000)
    assert _loss_points(page) == STEPS
    assert page.inner_text("#job-world") == "2 processes"
    assert page.inner_text("#job-strategy") == "(fsdp, full sharding by layer)"
    assert page.locator("#chart-loss .scatterlayer .trace").count() == 2  # raw + smoothed, one run
    steps = MetricPoint.objects.filter(job_id=job_id, name="loss").values_list("step", flat=True)
    assert sorted(steps) == list(range(1, STEPS + 1))
    world = MetricPoint.objects.filter(job_id=job_id, name="dist/world_size").values_list("value", flat=True)
    assert set(world) == {2.0}
    held = MetricPoint.objects.filter(job_id=job_id, name="dist/weights_held").values_list("value", flat=True)
    assert held and max(held) < 0.6  # sharded: rank 0 holds about half of the weights
    assert "engine: 2 processes" in log_path(TrainingJob.objects.get(pk=job_id)).read_text()
    page.screenshot(path=str(screenshot_dir / "two_process_job.png"), full_page=True)
    assert page.evaluate("window.__csp") == []
