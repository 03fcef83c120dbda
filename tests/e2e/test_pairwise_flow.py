"""An annotator logs in, judges three pairs with the keyboard only, freezes a version (a worker's job the
page follows) and downloads it."""

import json
from pathlib import Path

import pytest

from annotation.models import Assignment, Candidate, Judgment
from annotation.services.freeze_jobs import freeze_job_run
from tests.e2e.conftest import wait_for_new_panel
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LONG = "\n\n".join(
    [
        "Here is a careful answer. **Recursion** is when a function calls itself on a smaller input:",
        "```python\ndef factorial(n: int) -> int:\n    if n <= 1:\n        return 1\n"
        "    return n * factorial(n - 1)\n```",
        "1. Define a base case.\n2. Make each call smaller.\n3. Combine the results.",
        "| n | n! |\n|---|---|\n| 3 | 6 |\n| 5 | 120 |",
    ]
    + [f"Paragraph {i}: more explanation that makes the response long enough to scroll." for i in range(12)]
)
SHORT = "Recursion means a function calls itself. Example: `f(n) = n * f(n-1)`."


@pytest.fixture
def setup():
    user = UserFactory(username="alice")
    project = ProjectFactory(name="Helpfulness", overlap=1, guidelines="Prefer the **correct** answer.")
    MembershipFactory(project=project, user=user, role="manager")
    pair_task(project, prompt="Explain recursion to a new programmer.", texts=(LONG, SHORT))
    pair_task(project, prompt="What is 2 + 2?", texts=("4", "5"))
    pair_task(project, prompt="Name a prime number.", texts=("9", "7"))
    return user, project


def current_assignment_id(page) -> str:
    return page.get_attribute("#task-panel", "data-assignment-id")


def judge_with_keys(page, keys: list[str]) -> str:
    """Press the keys, then Enter, and wait for htmx to swap in the next panel."""
    before = current_assignment_id(page)
    for key in keys:
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    wait_for_new_panel(page, before)
    return before


def test_keyboard_only_annotation_then_freeze_and_export(
    page, live_server, login, setup, screenshot_dir, monkeypatch
):
    user, project = setup
    queued = []  # the freeze task is run below, by the test, while the page polls
    monkeypatch.setattr("annotation.tasks.freeze_run.delay", queued.append)
    login(page, "alice")
    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    page.wait_for_selector("#task-panel[data-state=task][data-ready]")
    page.evaluate("window.__loads = (window.__loads || 0) + 1")

    page.keyboard.press("1")
    assert page.get_attribute("#task-panel", "data-choice") == "left"
    page.screenshot(path=str(screenshot_dir / "pairwise.png"), full_page=False)
    judge_with_keys(page, ["Shift+3"])
    judge_with_keys(page, ["2"])
    judge_with_keys(page, ["1", "Shift+1"])
    page.wait_for_selector("#all-done")
    assert page.evaluate("window.__loads") == 1, "the page reloaded instead of swapping the panel"

    judgments = list(Judgment.objects.filter(task__project=project).order_by("id"))
    assert len(judgments) == 3
    expected_chosen = set()
    for judgment, side, strength in zip(judgments, (0, 1, 0), (3, 2, 1), strict=True):
        assignment = Assignment.objects.get(task=judgment.task, annotator=user)
        assert judgment.shown_order == assignment.shown_order
        assert judgment.time_spent_ms > 0 and judgment.strength == strength
        chosen_id = assignment.shown_order[side]
        assert judgment.choice == ("a" if chosen_id == judgment.task.candidate_ids[0] else "b")
        expected_chosen.add(Candidate.objects.get(pk=chosen_id).text)

    page.goto(f"{live_server.url}/projects/{project.pk}/versions/")
    page.click("#freeze-button")
    page.wait_for_selector("#freeze-progress[hx-trigger]")
    assert "Waiting for a worker" in page.inner_text("#freeze-progress")
    page.screenshot(path=str(screenshot_dir / "freeze_job.png"), full_page=False)
    assert len(queued) == 1
    freeze_job_run(job_id=queued[0])
    page.wait_for_selector("#export-jsonl")  # the next poll follows the job to its version's page
    with page.expect_download() as download_info:
        page.click("#export-jsonl")
    lines = Path(download_info.value.path()).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    assert {row["chosen"] for row in rows} == expected_chosen
    with page.expect_download() as parquet_info:
        page.click("#export-parquet")
    assert Path(parquet_info.value.path()).read_bytes()[:4] == b"PAR1"


def test_skip_with_s_and_a_reason_moves_to_the_next_task(page, live_server, login, setup):
    _user, project = setup
    login(page, "alice")
    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    page.wait_for_selector("#task-panel[data-state=task][data-ready]")
    before = current_assignment_id(page)
    page.keyboard.press("s")
    page.keyboard.type("too long to judge")
    page.keyboard.press("Enter")
    wait_for_new_panel(page, before)
    assert Assignment.objects.get(pk=before).skip_reason == "too long to judge"
    page.keyboard.press("?")
    assert page.is_visible("#help-overlay")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help-overlay")
