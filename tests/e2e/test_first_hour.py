"""A new user's first hour on the bundled model, in a browser: the demo as shipped freezes (the form previews
its rows) into train and held-out rows, a DPO job with the quick preset trains SmolLM2-135M on a worker, its
page goes through every stage, and its evaluation shows the held-out reward margin moved off zero."""

import time

import pytest

from annotation.models import DatasetVersion, Project
from prefstudio.management.commands import load_demo
from tests.integration.native import compose_command, native_env, running
from training.job_stages import STAGES
from training.models import TrainingJob

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo(monkeypatch):
    """The text demo as ``make run`` loads it (the image-pair demo, which trains the digits model, is
    ``test_load_demo``'s)."""
    from django.core.management import call_command

    monkeypatch.setattr(
        load_demo.Command,
        "_image_project",
        lambda self, users: Project.objects.get(name=load_demo.DEMO_PROJECT),
    )
    call_command("load_demo")
    return Project.objects.get(name=load_demo.DEMO_PROJECT)


def test_the_demo_freezes_trains_with_the_quick_preset_and_the_margin_moves(
    page, live_server, login, demo, settings, tmp_path, screenshot_dir
):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    env = native_env(ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT), TRAINING_TORCH_THREADS="2")
    base = f"{live_server.url}/projects/{demo.pk}"
    with running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log"):
        login(page, "demo-manager", load_demo.DEMO_PASSWORD)
        page.goto(f"{base}/versions/")
        page.wait_for_function("() => document.getElementById('freeze-preview-counts')")
        counts = page.locator("#freeze-preview-counts")
        train, test = int(counts.get_attribute("data-train")), int(counts.get_attribute("data-test"))
        assert train > 0 and test > 0, page.inner_text("#freeze-preview")
        page.screenshot(path=str(screenshot_dir / "first_hour_freeze.png"), full_page=True)
        page.click("#freeze-button")
        page.wait_for_function("() => /\\/versions\\/\\d+\\/$/.test(location.pathname)", timeout=120_000)
        version = DatasetVersion.objects.get(project=demo)
        assert (version.stats["train"], version.stats["test"]) == (train, test)  # as the preview said

        page.goto(f"{base}/jobs/new/?method=dpo&preset=quick&version={version.pk}")
        assert "expected run time about" in page.inner_text("#run-estimate")
        page.fill("#id_eval_generations", "1")
        page.screenshot(path=str(screenshot_dir / "first_hour_quick_preset.png"))
        started = time.monotonic()
        page.click("#launch-job")
        page.wait_for_url("**/jobs/*/", timeout=60_000)
        page.wait_for_function(
            "() => document.getElementById('job-state').textContent.trim() === 'Succeeded'", timeout=1_200_000
        )
        wall = time.monotonic() - started
    job = TrainingJob.objects.get(dataset_version=version)
    assert job.config["lora"] and job.total_steps == 30
    assert [li.get_attribute("data-stage") for li in page.locator("#job-stages li.done").all()] == list(
        STAGES
    )
    page.screenshot(path=str(screenshot_dir / "first_hour_job.png"), full_page=True)
    page.click("#job-evaluation-link")
    after = float(page.inner_text("#margin-after"))
    assert page.inner_text("#margin-before") == "0.000" and after > 0.05, after
    page.screenshot(path=str(screenshot_dir / "first_hour_evaluation.png"), full_page=True)
    print(f"quick preset: {wall:.0f} s from launch to succeeded; held-out margin 0 → {after:+.3f}")
