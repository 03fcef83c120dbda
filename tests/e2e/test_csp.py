"""Every page type works under the Content-Security-Policy: no violation is reported, and its JS runs
(htmx swaps and polls, plotly draws, the screens' scripts mark their panel ready)."""

import json

import pytest

from annotation.models import ImportJob
from tests import screen_data as sd
from tests.e2e.conftest import wait_for_new_panel
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.services.generation import GenerationSettings, generation_job_create
from training.services.jobs import training_job_launch
from training.services.metrics import metrics_write_batch

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REMOTE_IMAGE = "![pixel](https://tracker.example/p.png)"
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`);
});
"""
SCREENS = {
    "pairwise": lambda p: pair_task(p, prompt=f"Prompt {REMOTE_IMAGE}"),
    "ranking": lambda p: sd.ranking_task(p, texts=("one", "two", REMOTE_IMAGE)),
    "stepwise": lambda p: sd.steps_task(p, steps=("Let x = 2.", REMOTE_IMAGE)),
    "factuality": sd.facts_task,
    "multi_image": sd.multi_image_task,
    "image_pair": lambda p: sd.image_pair_task(p, caption=f"A cat {REMOTE_IMAGE}"),
}


@pytest.fixture
def watched(page):
    """The page, with every CSP violation (event or console message) and every htmx request recorded."""
    seen = {"console": [], "htmx": []}
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.on(
        "console",
        lambda m: seen["console"].append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("request", lambda r: seen["htmx"].append(r.url) if r.headers.get("hx-request") else None)
    page.on("response", lambda r: seen.setdefault("csp", r.headers.get("content-security-policy")))
    return page, seen


def visit(page, seen, url, *, ready=None):
    response = page.goto(url)
    assert response.status == 200, url
    page.wait_for_load_state("load")
    if ready:
        page.wait_for_selector(ready, state="attached")
    assert page.evaluate("typeof htmx") == "object", f"htmx did not load on {url}"
    return check(page, seen, url)


def check(page, seen, url):
    violations = page.evaluate("window.__csp") + seen["console"]
    assert violations == [], f"{url}: {violations}"
    assert page.locator("img[src^='http']").count() == 0, f"{url} shows a remote image"


@pytest.fixture
def studio(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="mia", is_staff=True, is_superuser=True)
    projects = {}
    for task_type, build in SCREENS.items():
        project = ProjectFactory(name=f"{task_type} project", task_type=task_type, guidelines=REMOTE_IMAGE)
        MembershipFactory(project=project, user=user, role="manager")
        build(project)
        build(project)
        projects[task_type] = project
    return user, projects


def test_annotation_pages_work_under_the_policy(watched, live_server, login, studio):
    page, seen = watched
    user, projects = studio
    base = live_server.url
    login(page, user.username)
    assert seen["csp"].startswith("default-src 'self'; img-src 'self' data:; script-src 'self'")
    visit(page, seen, f"{base}/")
    for task_type, project in projects.items():
        visit(page, seen, f"{base}/projects/{project.pk}/annotate/", ready="#task-panel[data-ready]")
        assert page.locator(".guidelines a", has_text="[image: pixel]").count() == 1, task_type
    # an htmx submit swaps the next pair in
    visit(page, seen, f"{base}/projects/{projects['pairwise'].pk}/annotate/", ready="#task-panel[data-ready]")
    before = page.get_attribute("#task-panel", "data-assignment-id")
    page.keyboard.press("0")
    page.keyboard.press("Enter")
    wait_for_new_panel(page, before)
    assert seen["htmx"], "no htmx request was made"
    check(page, seen, "annotate after an htmx swap")

    project = projects["pairwise"]
    version = dataset_version(project)
    for path in ("", "settings/", "versions/", f"versions/{version.pk}/", "agreement/", "gold/", "import/"):
        visit(page, seen, f"{base}/projects/{project.pk}/{path}")
    visit(page, seen, f"{base}/projects/{projects['stepwise'].pk}/steps/")
    visit(page, seen, f"{base}/projects/new/")
    visit(page, seen, f"{base}/accounts/token/")

    # the split <select> submits its form from a static script, not an inline handler
    page.goto(f"{base}/projects/{project.pk}/versions/{version.pk}/")
    with page.expect_navigation():
        page.select_option("#split-select", "test")
    assert "split=test" in page.url
    check(page, seen, "version split switch")

    # an upload: the import page polls its progress with htmx
    page.goto(f"{base}/projects/{project.pk}/import/")
    rows = "".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(3))
    page.set_input_files(
        "input[type=file]", {"name": "p.jsonl", "mimeType": "text/plain", "buffer": rows.encode()}
    )
    page.click("#import-upload-form button[type=submit]")
    page.wait_for_url("**/import/*/")
    check(page, seen, "import detail")
    assert ImportJob.objects.filter(project=project).exists()


def test_training_and_generation_pages_work_under_the_policy(watched, live_server, login, studio, tmp_path):
    page, seen = watched
    user, projects = studio
    project = projects["pairwise"]
    base = live_server.url
    version = dataset_version(project)
    model = tiny_model_entry(tmp_path / "tiny")
    jobs = [
        training_job_launch(
            params=tiny_params(tmp_path), base_model=model, dataset_version=version, created_by=user
        )
        for _ in range(2)
    ]
    for job in jobs:
        metrics_write_batch(
            job_id=job.pk, points=[(s, "loss", 1.0 / (s + 1), float(s)) for s in range(1, 20)]
        )
    generation = generation_job_create(project=project, settings=GenerationSettings(), spec="tiny")
    login(page, user.username)

    visit(page, seen, f"{base}/projects/{project.pk}/jobs/")
    visit(page, seen, f"{base}/projects/{project.pk}/jobs/{jobs[0].pk}/", ready="#chart-loss .main-svg")
    assert page.locator("#chart-loss .scatterlayer .trace").count() >= 1
    compare = f"{base}/projects/{project.pk}/jobs/compare/?jobs={jobs[0].pk},{jobs[1].pk}"
    visit(page, seen, compare, ready=".js-plotly-plot .main-svg")
    visit(page, seen, f"{base}/projects/{project.pk}/generate/")
    visit(page, seen, f"{base}/projects/{project.pk}/generate/{generation.pk}/")

    visit(page, seen, f"{base}/projects/{project.pk}/jobs/new/?method=dpo")
    with page.expect_navigation():
        page.select_option("#method-select", "ipo")
    assert "method=ipo" in page.url
    check(page, seen, "job form method switch")


def test_login_docs_and_admin_pages_work_under_the_policy(watched, live_server, login, studio):
    page, seen = watched
    user, _ = studio
    base = live_server.url
    page.goto(f"{base}/accounts/login/")
    check(page, seen, "login")
    login(page, user.username)
    page.goto(f"{base}/api/docs")
    page.wait_for_selector(".swagger-ui .opblock", state="attached")
    check(page, seen, "api docs")
    page.goto(f"{base}/admin/")
    check(page, seen, "admin")
