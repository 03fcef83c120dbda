"""A manager starts a stream of two domains from the form and watches its page while a real worker trains
it on the tiny model: the stage line names the method and domain, and once it succeeds the three
forgetting matrices are drawn side by side (not overlapping) under the Content-Security-Policy."""

import re

import pytest

from annotation.services.versions import dataset_version_from_rows
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running
from tests.training_support import tiny_model_entry
from training.engine.cross_domain import domain_rows
from training.models import DomainStream

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STATE_IS = "s => document.getElementById('stream-state').textContent.trim() === s"
DRAWN = "() => document.getElementById('domain-chart-grid').dataset.drawn === '3'"


def test_a_stream_started_from_the_form_shows_its_stage_then_the_forgetting_picture(
    page, live_server, login, settings, tmp_path, screenshot_dir
):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="streamer")
    project = ProjectFactory(name="Two domains")
    MembershipFactory(project=project, user=user, role="manager")
    for i, name in enumerate(("A", "B")):
        rows = domain_rows(24, seed=i, domain=name, split="train")
        rows += domain_rows(8, seed=i + 50, domain=name, split="test")
        dataset_version_from_rows(
            project=project,
            rows=[(r["split"], r) for r in rows],
            provenance={"source": "e2e", "domain": name},
        )
    base = tiny_model_entry(tmp_path / "base")
    page.context.add_init_script(RECORD_VIOLATIONS)
    env = native_env(ARTIFACT_ROOT=str(tmp_path / "artifacts"), TRAINING_HEARTBEAT_SECONDS="0.5")
    with running(compose_command("worker"), env=env, log_path=tmp_path / "worker.log"):
        login(page, user.username)
        page.goto(f"{live_server.url}/projects/{project.pk}/jobs/")
        page.click("#domain-streams")
        page.fill("#id_name", "A then B")
        page.select_option("#id_base_model", str(base.pk))
        for box in page.locator("#id_versions input[type=checkbox]").all():
            box.check()
        # long enough for the 2 s poll to see stages run (30 steps per domain took 4.5 s in CI)
        for name, value in {"learning_rate": 0.002, "max_steps": 120, "batch_size": 8}.items():
            page.fill(f"#id_{name}", str(value))
        page.click("#start-stream")
        page.wait_for_url("**/domains/*/")
        page.wait_for_selector("#stream-stage", timeout=120_000)
        stages = set()
        for _ in range(1200):
            if page.locator("#stream-stage").count():
                stages.add(page.inner_text("#stream-stage"))
            if page.inner_text("#stream-state") != "Running" and page.locator("#stream-stage").count() == 0:
                break
            page.wait_for_timeout(100)
        page.wait_for_function(STATE_IS, arg="Succeeded", timeout=300_000)
        page.wait_for_function(DRAWN, timeout=30_000)
    # the stage line names the method and domain training (which ones the 2 s poll catches varies)
    assert stages and all(re.fullmatch(r"(sequential_dpo|ofs|cofs) on v[12]", s) for s in stages), stages
    stream = DomainStream.objects.get()
    assert page.locator("#forgetting tbody tr").count() == 2
    boxes = [page.locator(f"#chart-{key}").bounding_box() for key in ("sequential", "ofs", "cofs")]
    for i, a in enumerate(boxes):
        assert a["height"] > 100
        for b in boxes[i + 1 :]:
            apart = a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
            assert apart or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"]
    assert page.locator("#chart-cofs .hm").count() == 1  # a heatmap trace
    assert stream.result["cofs"]["domains"] == ["v1", "v2"]
    page.screenshot(path=str(screenshot_dir / "domain_stream.png"), full_page=True)
    assert page.evaluate("window.__csp") == []
