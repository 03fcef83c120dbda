"""An annotator judges a pair, opens their recent judgments, corrects it to the other side, and sees the
new vote; the old judgment stays, superseded."""

import pytest

from annotation.models import Judgment
from tests.e2e.conftest import wait_for_new_panel
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_annotator_corrects_a_judgment_to_the_other_side(page, live_server, login, screenshot_dir):
    user = UserFactory(username="corinne")
    project = ProjectFactory(name="Corrections", overlap=1)
    MembershipFactory(project=project, user=user, role="annotator")
    pair_task(
        project, prompt="Which answer explains gravity better?", texts=("Mass attracts mass.", "Magic.")
    )
    page.context.add_init_script(RECORD_VIOLATIONS)
    login(page, "corinne")

    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    page.wait_for_selector("#task-panel[data-ready='1']")
    before = page.get_attribute("#task-panel", "data-assignment-id")
    page.keyboard.press("1")  # A (left) is better, strength "clearly" (the default)
    page.keyboard.press("Enter")
    wait_for_new_panel(page, before)
    old = Judgment.objects.get(annotator=user)
    old_choice = old.choice  # a or b: the left/right order is random

    page.click("#recent-judgments")
    row = page.locator(f"#recent-judgments tr[data-judgment-id='{old.pk}']")
    assert "A (left) is better · clearly" in row.inner_text()
    row.get_by_role("link", name="Correct").click()
    page.wait_for_selector("#task-panel[data-ready='1']")
    assert page.is_checked("input[name='choice'][value='left']")  # pre-filled with the current vote
    page.keyboard.press("2")  # the other side
    page.keyboard.press("Shift+3")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/projects/{project.pk}/mine/judgments/")

    new = Judgment.objects.get(supersedes=old)
    new_row = page.locator(f"#recent-judgments tr[data-judgment-id='{new.pk}']")
    assert "B (right) is better · much better" in new_row.inner_text()
    assert page.locator(f"tr[data-judgment-id='{old.pk}']").count() == 0
    assert "Correction saved" in page.inner_text(".messages")
    old.refresh_from_db()
    assert old.choice == old_choice and new.choice == {"a": "b", "b": "a"}[old_choice]  # old row kept
    page.screenshot(path=str(screenshot_dir / "annotator_corrects.png"), full_page=True)
    assert page.evaluate("window.__csp") == []
