"""A manager launches training jobs from the form: the chart grows live and cancel stops a long job; a short
one ends with every point, each stage it went through (seen live, then listed), artifacts, evaluation."""

import time

import pytest

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running
from tests.training_support import dataset_version, tiny_model_entry
from training.job_stages import STAGES

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="trainer")
    project = ProjectFactory(name="Tiny training")
    MembershipFactory(project=project, user=user, role="manager")
    version = dataset_version(project)
    return user, project, version, tiny_model_entry(tmp_path / "tiny")


LIVE_STAGES = {label.capitalize() for label in STAGES.values()}


def _stage_lines_until_finished(page, timeout_s: float = 300) -> list[str]:
    """The live stage lines the page showed (``#job-stage``) while it polled, until the job succeeded."""
    lines, deadline = [], time.monotonic() + timeout_s
    while page.inner_text("#job-state").strip() != "Succeeded":
        assert time.monotonic() < deadline, f"the job did not succeed in {timeout_s} s; stages seen {lines}"
        line = page.locator("#job-stage").all_inner_texts()
        if line and (not lines or lines[-1] != line[0]):
            lines.append(line[0])
        page.wait_for_timeout(200)
    return lines


def _loss_points(page) -> int:
    return int(page.get_attribute("#charts", "data-loss-points") or 0)


def _launch(page, live_server, project, version, base, tmp_path, *, max_steps: int, screenshot=None):
    page.goto(f"{live_server.url}/projects/{project.pk}/jobs/new/?method=dpo")
    page.select_option("#id_base_model", str(base.pk))
    page.select_option("#id_dataset_version", str(version.pk))
    for name, value in {
        "batch_size": "4",
        "epochs": "100000",
        "max_steps": str(max_steps),
        "learning_rate": "0.001",
        "max_length": "64",
    }.items():
        page.fill(f"#id_{name}", value)
    page.click("#preview-config")
    assert f"max_steps: {max_steps}" in page.inner_text("#config-yaml")
    if screenshot:
        page.screenshot(path=str(screenshot), full_page=True)
    page.click("#launch-job")
    page.wait_for_url("**/jobs/*/")


def _worker(tmp_path):
    env = native_env(ARTIFACT_ROOT=str(tmp_path / "artifacts"), TRAINING_METRICS_FLUSH_SECONDS="0.2")
    return running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log")


def test_the_chart_grows_while_the_job_runs_and_cancel_stops_it(page, live_server, login, setup, tmp_path):
    """A job far longer than the test (a tiny model does ~100 steps/s here) so the page must see it grow."""
    user, project, version, base = setup
    with _worker(tmp_path):
        login(page, user.username)
        _launch(page, live_server, project, version, base, tmp_path, max_steps=1_000_000)
        page.wait_for_function(
            "() => Number(document.getElementById('charts').dataset.lossPoints || 0) > 0", timeout=90_000
        )
        first = _loss_points(page)
        page.wait_for_function(
            "n => Number(document.getElementById('charts').dataset.lossPoints || 0) > n",
            arg=first,
            timeout=90_000,
        )
        assert page.locator("#chart-loss .scatterlayer .trace").count() == 2  # raw (faint) + smoothed
        page.click("#cancel-job")
        page.wait_for_function(
            "() => document.getElementById('job-state').textContent.trim() === 'Cancelled'", timeout=90_000
        )
        page.wait_for_function(
            "() => document.getElementById('charts').dataset.done === 'true'", timeout=30_000
        )
    assert first < _loss_points(page) < 1_000_000


def test_a_job_launched_from_the_form_ends_with_every_point_and_its_evaluation(
    page, live_server, login, setup, tmp_path, screenshot_dir
):
    user, project, version, base = setup
    with _worker(tmp_path):
        login(page, user.username)
        _launch(
            page,
            live_server,
            project,
            version,
            base,
            tmp_path,
            max_steps=300,
            screenshot=screenshot_dir / "job_launch_form.png",
        )
        lines = _stage_lines_until_finished(page)
        page.wait_for_function(
            "() => document.getElementById('charts').dataset.done === 'true'", timeout=30_000
        )
    page.wait_for_timeout(500)  # the last status swap and redraws settle
    page.screenshot(path=str(screenshot_dir / "job_dashboard.png"), full_page=True)
    assert _loss_points(page) == 300
    boxes = [b for b in (c.bounding_box() for c in page.locator("#charts .chart.js-plotly-plot").all()) if b]
    assert len(boxes) >= 3 and all(b["height"] > 200 for b in boxes)  # laid out, not collapsed
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart_x = a["x"] + a["width"] <= b["x"] + 1 or b["x"] + b["width"] <= a["x"] + 1
            apart_y = a["y"] + a["height"] <= b["y"] + 1 or b["y"] + b["height"] <= a["y"] + 1
            assert apart_x or apart_y, (a, b)
    raw_lr = page.locator("#chart-learning_rate .scatterlayer .trace").first  # drawn as set: no faint raw
    assert raw_lr.evaluate("t => getComputedStyle(t).opacity") == "0"
    assert page.locator("#chart-loss .scatterlayer .trace").count() == 2
    assert page.locator("#artifacts").count() == 1
    assert lines and all(line.split(" · ")[0] in LIVE_STAGES for line in lines), lines
    done = page.locator("#job-stages li.done")
    assert [li.get_attribute("data-stage") for li in done.all()] == list(STAGES)  # every stage, in order
    assert page.locator("#job-stages li.current").count() == 0
    assert "Training · 300 steps" in page.inner_text("#job-stages")
    page.click("#job-evaluation-link")
    assert page.inner_text("#accuracy-after") and page.locator("#heatmap .heat span").count() > 0
    page.screenshot(path=str(screenshot_dir / "job_evaluation.png"), full_page=True)
