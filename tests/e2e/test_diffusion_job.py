"""A manager launches Diffusion-DPO from the form on an image-pair version: the loss chart grows while the
worker trains a tiny diffusion model, the sample grid fills with images, and the evaluation shows the base
and trained samples side by side (screenshots of both pages under var/screenshots/)."""

from pathlib import Path

import pytest

from tests.diffusion_support import image_pair_version, tiny_diffusion_entry
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
IMAGES_LOADED = (
    "sel => { const imgs = [...document.querySelectorAll(sel)];"
    " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
)


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="diffuser")
    project = ProjectFactory(name="Bright pictures")
    MembershipFactory(project=project, user=user, role="manager")
    version = image_pair_version(project)
    return user, project, version, tiny_diffusion_entry(tmp_path / "tiny-pixel")


def _worker(tmp_path):
    env = native_env(ARTIFACT_ROOT=str(tmp_path / "artifacts"), TRAINING_METRICS_FLUSH_SECONDS="0.2")
    return running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log")


def _loss_points(page) -> int:
    return int(page.get_attribute("#charts", "data-loss-points") or 0)


def _screenshot(page, path: Path) -> None:
    """A full-page screenshot taken at a viewport as tall as the page: plotly redraws its charts on the
    resize a full-page capture causes, and would otherwise be caught halfway through."""
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1440, "height": height})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 960})


def _launch(page, live_server, project, version, base) -> None:
    page.goto(f"{live_server.url}/projects/{project.pk}/jobs/new/")
    assert page.input_value("#method-select") == "diffusion_dpo"  # the only method for image pairs
    with page.expect_navigation():
        page.select_option("#method-select", "diffusion_dpo")
    assert "½ convention" in page.inner_text("#field-beta")
    base_choices = page.eval_on_selector_all("#id_base_model option", "os => os.map(o => o.textContent)")
    assert base.name in base_choices and not any("SmolLM2" in c for c in base_choices)
    page.select_option("#id_base_model", str(base.pk))
    page.select_option("#id_dataset_version", str(version.pk))
    for name, value in {
        "batch_size": "4",
        "epochs": "100000",
        "max_steps": "120",
        "learning_rate": "0.001",
        "warmup_ratio": "0",
        "eval_steps": "30",
        "save_steps": "60",
        "sample_count": "4",
        "sample_steps": "4",
    }.items():
        page.fill(f"#id_{name}", value)
    page.click("#preview-config")
    assert "method: diffusion_dpo" in page.inner_text("#config-yaml")
    page.click("#launch-job")
    page.wait_for_url("**/jobs/*/")


def test_diffusion_dpo_from_the_form_grows_the_chart_and_fills_the_sample_grid(
    page, live_server, login, setup, tmp_path
):
    user, project, version, base = setup
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.context.add_init_script(RECORD_VIOLATIONS)  # the pages work under the Content-Security-Policy
    with _worker(tmp_path):
        login(page, user.username)
        _launch(page, live_server, project, version, base)
        page.wait_for_function(
            "() => Number(document.getElementById('charts').dataset.lossPoints || 0) > 0", timeout=120_000
        )
        first = _loss_points(page)
        page.wait_for_function(
            "n => Number(document.getElementById('charts').dataset.lossPoints || 0) > n",
            arg=first,
            timeout=120_000,
        )
        page.wait_for_function(IMAGES_LOADED, arg="#sample-grid img", timeout=60_000)
        page.wait_for_function(
            "() => document.getElementById('job-state').textContent.trim() === 'Succeeded'", timeout=300_000
        )
        page.wait_for_function(
            "() => document.getElementById('charts').dataset.done === 'true'", timeout=30_000
        )
    assert first < _loss_points(page) == 120
    assert page.locator("#chart-loss .scatterlayer .trace").count() == 2
    page.wait_for_function(
        "() => document.getElementById('job-samples').dataset.step === '120'", timeout=30_000
    )
    page.wait_for_function(IMAGES_LOADED, arg="#sample-grid img", timeout=30_000)
    assert page.locator("#sample-grid img").count() == 4
    assert page.locator("#sample-steps .step-link").count() == 5  # steps 0, 30, 60, 90, 120
    _screenshot(page, SCREENSHOTS / "diffusion-job.png")

    assert page.evaluate("window.__csp") == []
    page.click("#sample-steps .step-link[data-step='0']")
    page.wait_for_function("() => document.getElementById('job-samples').dataset.step === '0'")
    page.wait_for_function(IMAGES_LOADED, arg="#sample-grid img", timeout=30_000)

    page.click("#job-evaluation-link")
    assert page.inner_text("#accuracy-before") == "0.500" and page.inner_text("#accuracy-after")
    page.wait_for_function(IMAGES_LOADED, arg="#sample-pairs img", timeout=30_000)
    assert page.locator("#sample-pairs img").count() == 8  # base and trained, four captions
    assert page.evaluate("window.__csp") == [] and page.locator("img[src^='http']").count() == 0
    _screenshot(page, SCREENSHOTS / "diffusion-evaluation.png")
