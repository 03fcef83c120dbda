"""A manager launches a reward model from the form and, once it has finished, PPO on it from the form: both
dashboards' charts grow while the worker trains tiny models, the PPO page fills its rollout table, and the
PPO evaluation draws the score distribution before and after (all under the Content-Security-Policy)."""

import pytest

from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running
from tests.training_support import dataset_version, tiny_model_entry

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REWARD_STEPS, PPO_STEPS = 300, 200
POINTS = "() => Number(document.getElementById('charts').dataset.lossPoints || 0) > 0"
MORE_POINTS = "n => Number(document.getElementById('charts').dataset.lossPoints || 0) > n"
STATE_IS = "s => document.getElementById('job-state').textContent.trim() === s"
DONE = "() => document.getElementById('charts').dataset.done === 'true'"


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="rlhf")
    project = ProjectFactory(name="Tiny RLHF")
    MembershipFactory(project=project, user=user, role="manager")
    return user, project, dataset_version(project), tiny_model_entry(tmp_path / "tiny")


def _worker(tmp_path):
    env = native_env(ARTIFACT_ROOT=str(tmp_path / "artifacts"), TRAINING_METRICS_FLUSH_SECONDS="0.2")
    return running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log")


def _loss_points(page) -> int:
    return int(page.get_attribute("#charts", "data-loss-points") or 0)


def _launch(page, live_server, project, method: str, choices: dict, values: dict) -> int:
    page.goto(f"{live_server.url}/projects/{project.pk}/jobs/new/?method={method}")
    for name, value in choices.items():
        page.select_option(f"#id_{name}", str(value))
    for name, value in values.items():
        page.fill(f"#id_{name}", str(value))
    page.click("#preview-config")
    assert f"method: {method}" in page.inner_text("#config-yaml")
    page.click("#launch-job")
    page.wait_for_url("**/jobs/*/")
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def _grows(page) -> int:
    """The loss chart's first points, then more of them while the job runs: the number first seen."""
    page.wait_for_function(POINTS, timeout=120_000)
    first = _loss_points(page)
    page.wait_for_function(MORE_POINTS, arg=first, timeout=120_000)
    return first


def _until_finished(page, steps: int) -> None:
    """Points appear, the job succeeds, and the chart ends with every step."""
    page.wait_for_function(POINTS, timeout=120_000)
    page.wait_for_function(STATE_IS, arg="Succeeded", timeout=180_000)
    page.wait_for_function(DONE, timeout=30_000)
    assert _loss_points(page) == steps


def test_a_reward_model_then_ppo_on_it_from_the_forms_grow_both_dashboards(
    page, live_server, login, setup, tmp_path, screenshot_dir
):
    user, project, version, base = setup
    page.context.add_init_script(RECORD_VIOLATIONS)
    with _worker(tmp_path):
        login(page, user.username)
        rm_job = _launch(
            page,
            live_server,
            project,
            "reward_model",
            {"base_model": base.pk, "dataset_version": version.pk},
            {
                "batch_size": 4,
                "epochs": 100,
                "max_steps": REWARD_STEPS,
                "learning_rate": 0.002,
                "max_length": 64,
            },
        )
        rm_first = _grows(page)
        _until_finished(page, REWARD_STEPS)
        assert page.locator("#chart-accuracy .scatterlayer .trace").count() == 2  # raw + smoothed
        reward_name = page.inner_text("#produced-model")
        assert reward_name == f"job-{rm_job}-reward_model"

        page.goto(f"{live_server.url}/projects/{project.pk}/jobs/new/?method=ppo")
        offered = page.eval_on_selector_all("#id_reward_model option", "os => os.map(o => o.textContent)")
        assert reward_name in offered and base.name not in offered
        reward_value = page.eval_on_selector(
            "#id_reward_model",
            "(s, name) => [...s.options].find(o => o.textContent === name).value",
            reward_name,
        )
        _launch(
            page,
            live_server,
            project,
            "ppo",
            {"base_model": base.pk, "dataset_version": version.pk, "reward_model": reward_value},
            {
                "batch_size": 2,
                "num_ppo_epochs": 2,
                "max_new_tokens": 6,
                "max_steps": PPO_STEPS,
                "epochs": 100,
                "learning_rate": 0.001,
                "warmup_ratio": 0,
                "eval_steps": 50,
                "save_steps": 100,
            },
        )
        ppo_first = _grows(page)
        page.wait_for_function("() => document.querySelectorAll('#rollout-table tbody tr').length > 0")
        _until_finished(page, PPO_STEPS)
    assert rm_first < REWARD_STEPS and ppo_first < PPO_STEPS
    assert page.locator("#chart-scores .scatterlayer .trace").count() == 4  # score and rlhf reward
    assert page.locator("#chart-kl .scatterlayer .trace").count() == 2
    page.wait_for_function(
        "n => document.getElementById('job-rollouts').dataset.step === String(n)", arg=PPO_STEPS - 1
    )
    assert page.locator("#rollout-table tbody tr").count() == 2
    page.screenshot(path=str(screenshot_dir / "ppo_dashboard.png"), full_page=True)

    page.click("#job-evaluation-link")
    page.wait_for_function("() => document.getElementById('score-histogram-chart').dataset.drawn === 'true'")
    assert page.locator("#policy-generations tbody tr").count() == 8
    assert page.locator("#score-histogram-chart .trace").count() == 2
    page.screenshot(path=str(screenshot_dir / "ppo_evaluation.png"), full_page=True)
    assert page.evaluate("window.__csp") == []
