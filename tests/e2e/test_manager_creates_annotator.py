"""A manager creates an annotator on the project's settings page and copies the one-time link; the
annotator opens it in a browser of their own, sets a password, logs in and judges a pair."""

import pytest

from annotation.models import Judgment
from tests.e2e.conftest import wait_for_new_panel
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.factories import MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
NEW_PASSWORD = "violet-anchor-harbour-52"


def violations(page) -> list[str]:
    return page.evaluate("window.__csp")


def test_manager_creates_an_annotator_who_sets_a_password_and_annotates(
    page, browser, live_server, login, screenshot_dir
):
    lead = UserFactory(username="lead", is_staff=False)
    project = ProjectFactory(name="Helpfulness", overlap=1)
    MembershipFactory(project=project, user=lead, role="manager")
    pair_task(project, prompt="What is 2 + 2?", texts=("4", "5"))
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)

    login(page, "lead")
    page.goto(f"{live_server.url}/projects/{project.pk}/settings/")
    assert page.input_value("#id_role") == "annotator" and page.input_value("#id_account-role") == "annotator"
    page.fill("#id_account-username", "newbie")
    page.click("#account-form button[type=submit]")
    page.wait_for_selector("#account-invite")
    page.click("button[data-copy='#account-link']")
    page.wait_for_selector("button[data-copy]:text-is('Copied')")
    link = page.evaluate("navigator.clipboard.readText()")
    assert link == page.input_value("#account-link") and "/accounts/set-password/" in link
    page.screenshot(path=str(screenshot_dir / "manager_creates_annotator.png"), full_page=True)
    assert violations(page) == []

    context = browser.new_context(viewport={"width": 1280, "height": 900})  # the invitee's own browser
    context.set_default_timeout(15_000)
    context.add_init_script(RECORD_VIOLATIONS)
    invitee = context.new_page()
    try:
        invitee.goto(link)
        invitee.fill("#id_new_password1", NEW_PASSWORD)
        invitee.fill("#id_new_password2", NEW_PASSWORD)
        assert violations(invitee) == []
        invitee.click("#set-password button[type=submit]")
        invitee.wait_for_url(f"{live_server.url}/accounts/login/")
        assert "Password set for newbie" in invitee.inner_text(".messages")
        login(invitee, "newbie", NEW_PASSWORD)
        invitee.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
        invitee.wait_for_selector("#task-panel[data-state=task][data-ready]")
        before = invitee.get_attribute("#task-panel", "data-assignment-id")
        invitee.keyboard.press("1")
        invitee.keyboard.press("Enter")
        wait_for_new_panel(invitee, before)
        assert violations(invitee) == []

        invitee.goto(link)  # the link worked once
        assert "has been used already or has expired" in invitee.inner_text("#link-invalid")
    finally:
        context.close()
    judgment = Judgment.objects.get(task__project=project)
    assert judgment.annotator.username == "newbie"
