"""A manager starts a two-round reward-model loop from the form and watches its page: the round timeline
advances stage by stage while a real worker runs it on tiny models, the charts across rounds draw round 0
(the starting policy) to round 2, and every page works under the Content-Security-Policy."""

import pytest

from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running
from tests.training_support import dataset_version, tiny_model_entry
from tests.unit.test_loops import tiny_reward_entry
from training.models import Loop

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STATE_IS = "s => document.getElementById('loop-state').textContent.trim() === s"
ROUNDS_SHOWN = "n => Number(document.getElementById('loop-status').dataset.rounds) >= n"
CHART_ROUNDS = "n => document.getElementById('loop-chart-grid').dataset.drawn === String(n)"


def test_a_loop_started_from_the_form_advances_its_timeline_to_the_end(
    page, live_server, login, settings, tmp_path, screenshot_dir
):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="looper")
    project = ProjectFactory(name="Tiny loop")
    MembershipFactory(project=project, user=user, role="manager")
    version = dataset_version(project, train=8, test=4)
    policy = tiny_model_entry(tmp_path / "policy")
    reward = tiny_reward_entry(tmp_path / "rm", project=project)
    page.context.add_init_script(RECORD_VIOLATIONS)
    env = native_env(ARTIFACT_ROOT=str(tmp_path / "artifacts"), TRAINING_HEARTBEAT_SECONDS="0.5")
    with running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log"):
        login(page, user.username)
        page.goto(f"{live_server.url}/projects/{project.pk}/jobs/")
        page.click("#online-loops")
        page.fill("#id_name", "tiny <b>loop</b>")
        page.select_option("#id_prompt_version", str(version.pk))
        page.select_option("#id_start_model", str(policy.pk))
        page.select_option("#id_reward_model", str(reward.pk))
        page.select_option("#id_labeller", "reward_model")
        for name, value in {
            "rounds": 2,
            "k": 3,
            "max_new_tokens": 8,
            "max_prompts": 6,
            "eval_prompts": 3,
            "learning_rate": 0.001,
            "epochs": 1000,
            "max_steps": 300,
        }.items():
            page.fill(f"#id_{name}", str(value))
        page.click("#start-loop")
        page.wait_for_url("**/loops/*/")
        assert page.inner_text("h1").startswith("tiny <b>loop</b>")  # escaped, shown as typed
        page.wait_for_function(ROUNDS_SHOWN, arg=1, timeout=120_000)
        seen = []  # (rounds on the timeline, round 1's stage) as the polled card changes
        for _ in range(1200):
            shown = (
                page.get_attribute("#loop-status", "data-rounds"),
                page.get_attribute("#round-1", "data-stage"),
            )
            if not seen or seen[-1] != shown:
                seen.append(shown)
            if shown[0] == "2":
                break
            page.wait_for_timeout(100)
        assert ("1", "train") in seen and seen[-1] == ("2", "done"), seen  # the timeline moved on its own
        page.wait_for_function(STATE_IS, arg="Succeeded", timeout=180_000)
        page.wait_for_function(CHART_ROUNDS, arg=3, timeout=30_000)
    loop = Loop.objects.get()
    assert loop.name == "tiny <b>loop</b>" and loop.rounds.count() == 2
    assert page.locator("#round-2 .stage.done").count() == 5
    assert page.inner_text("#loop-stopped") == "ran 2 rounds"
    assert page.locator("#chart-mean_score .scatterlayer .trace").count() == 1
    assert page.locator("#loop-examples tbody tr").count() == 6
    page.screenshot(path=str(screenshot_dir / "loop_rounds.png"), full_page=True)
    assert page.evaluate("window.__csp") == []
