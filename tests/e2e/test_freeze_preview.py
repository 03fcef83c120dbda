"""The freeze form previews what its rule would make before anything is frozen: rows per split and the tasks
it leaves out, and a warning when the held-out split would be empty; it updates as a setting changes."""

import pytest

from annotation.models import DatasetVersion, Judgment
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TEST_ROWS = "n => document.getElementById('freeze-preview-counts')?.dataset.test === String(n)"


def test_the_freeze_preview_counts_the_rows_and_warns_of_an_empty_held_out_split(
    page, live_server, login, screenshot_dir
):
    manager, other = UserFactory(username="mara"), UserFactory(username="otto")
    project = ProjectFactory(name="Preview")
    MembershipFactory(project=project, user=manager, role="manager")
    for i in range(12):
        task = pair_task(project, prompt=f"prompt {i}")
        Judgment.objects.create(task=task, annotator=manager, choice="a", strength=2)
        Judgment.objects.create(task=task, annotator=other, choice="a" if i < 9 else "b", strength=2)
    page.context.add_init_script(RECORD_VIOLATIONS)
    login(page, manager.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/versions/")
    page.wait_for_function(TEST_ROWS, arg=1)
    counts = page.inner_text("#freeze-preview-counts")
    assert "9 rows" in counts and "8 to train on and 1 held out" in counts
    assert "3 · no strict majority (the annotators disagree)" in counts
    page.fill("#id_test_fraction", "0")
    page.dispatch_event("#id_test_fraction", "change")
    page.wait_for_function(TEST_ROWS, arg=0)
    assert "held-out split would be empty" in page.inner_text("#freeze-preview")
    page.screenshot(path=str(screenshot_dir / "freeze_preview.png"), full_page=True)
    assert not DatasetVersion.objects.filter(project=project).exists()
    assert page.evaluate("window.__csp") == []
