"""An annotator types a prompt into a trained model's "try it" box: a worker answers it with the base and the
trained model, and the page shows both side by side with the settings, the prompt escaped."""

import pytest

from tests.factories import MembershipFactory, UserFactory
from tests.integration.native import compose_command, native_env, running
from tests.training_support import succeeded_job

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_member_tries_a_trained_model_against_its_base(
    page, live_server, login, settings, tmp_path, project, manager, screenshot_dir
):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    job = succeeded_job(tmp_path, project, manager)
    member = UserFactory(username="tryer")
    MembershipFactory(project=project, user=member, role="annotator")
    env = native_env(ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT))
    with running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log"):
        login(page, member.username)
        page.goto(f"{live_server.url}/projects/{project.pk}/jobs/{job.pk}/")
        page.fill("#id_prompt", "cat <i>dog</i>")
        page.select_option("#id_mode", "sample")
        page.fill("#id_max_new_tokens", "16")
        page.fill("#id_seed", "5")
        page.click("#try-it-submit")
        page.wait_for_function(
            "() => { const a = document.querySelector('.try-answer');"
            " return a && a.dataset.state === 'succeeded'; }",
            timeout=120_000,
        )
    answer = page.locator(".try-answer").first
    assert "sampled at temperature 0.7, top-p 0.9, seed 5 · at most 16 new tokens" in answer.inner_text()
    assert answer.locator(".try-prompt-text").inner_text() == "cat <i>dog</i>"  # shown as typed, not markup
    assert answer.locator("i").count() == 0
    base, trained = answer.locator(".try-base").inner_text(), answer.locator(".try-trained").inner_text()
    assert base and trained and base != trained
    left, right = answer.locator(".try-base").bounding_box(), answer.locator(".try-trained").bounding_box()
    assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 2  # side by side
    page.screenshot(path=str(screenshot_dir / "try_it.png"), full_page=True)
