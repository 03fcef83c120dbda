"""A manager follows the agreement page's disagreement link to the queue, opens an item and sees both
annotators' votes, with no Content-Security-Policy violation on the way."""

import pytest

from annotation.models import Judgment
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def split_vote():
    manager = UserFactory(username="maya")
    project = ProjectFactory(name="Kindness", overlap=2)
    MembershipFactory(project=project, user=manager, role="manager")
    ann, bob = UserFactory(username="ann"), UserFactory(username="bob")
    for user in (ann, bob):
        MembershipFactory(project=project, user=user, role="annotator")
    agreed = pair_task(project, prompt="Say hello.", texts=("Hello!", "Go away."))
    split = pair_task(project, prompt="Is <b>this</b> kind?", texts=("Yes, gently.", "No, bluntly."))
    for user in (ann, bob):
        Judgment.objects.create(task=agreed, annotator=user, choice="a", strength=2)
    Judgment.objects.create(task=split, annotator=ann, choice="a", strength=3, rationale="gentler")
    Judgment.objects.create(task=split, annotator=bob, choice="b", strength=1, rationale="more honest")
    return manager, project, split


def test_manager_follows_the_disagreement_link_to_an_item_and_sees_both_votes(
    page, live_server, login, split_vote, screenshot_dir
):
    manager, project, split = split_vote
    violations = []
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    login(page, manager.username)

    page.goto(f"{live_server.url}/projects/{project.pk}/agreement/")
    link = page.locator("#disagreement-link")
    assert link.inner_text() == "1 item where annotators disagree →"
    link.click()
    page.wait_for_selector("#disagreement-table")
    assert page.locator("#disagreement-table tbody tr").count() == 1
    page.locator(f"#disagreement-table a[href*='/items/{split.item_id}/']").click()

    task = page.locator(f"#task-{split.pk}")
    task.wait_for()
    assert "annotators disagree" in task.inner_text()
    rows = task.locator("tbody tr.current")
    assert rows.count() == 2
    votes = {rows.nth(i).locator("td").nth(1).inner_text(): rows.nth(i).inner_text() for i in range(2)}
    assert "A is better (response 1)" in votes["ann"] and "gentler" in votes["ann"]
    assert "B is better (response 2)" in votes["bob"] and "more honest" in votes["bob"]
    assert page.locator("#item-prompt pre").inner_text() == "Is <b>this</b> kind?"  # shown, not markup
    page.screenshot(path=str(screenshot_dir / "disagreement_queue.png"), full_page=True)

    assert page.evaluate("window.__csp") + violations == []
