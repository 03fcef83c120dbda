"""Model text is untrusted: script tags and event-handler attributes in candidates render as inert text."""

import pytest

from annotation.models import Candidate, Task
from tests.e2e.conftest import wait_for_new_panel
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory, pair_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=2">'
ALL_PAYLOADS = (SCRIPT, IMG)


@pytest.fixture
def project_with_payloads():
    user = UserFactory(username="bob")
    project = ProjectFactory(name="XSS", guidelines=f"Guidelines {IMG}")
    MembershipFactory(project=project, user=user, role="annotator")
    pair_task(project, prompt=f"Prompt {IMG}", texts=(f"Left says {SCRIPT}", f"Right says {IMG}"))
    # The second task arrives through an htmx swap, and holds its payloads in conversation turns.
    item = ItemFactory(project=project, messages=[{"role": "user", "content": f"Turn {SCRIPT}"}])
    texts = (f"Second {SCRIPT}", f"Second {IMG}")
    candidates = [Candidate.objects.create(item=item, position=i, text=t) for i, t in enumerate(texts)]
    Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in candidates])
    return project


def assert_inert(page, dialogs):
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []
    assert page.locator("#task-panel script").count() == 0
    assert page.locator("#task-panel img[onerror], .guidelines img[onerror]").count() == 0
    text = page.inner_text("#task-panel")
    for payload in ALL_PAYLOADS:
        assert payload in text, f"{payload!r} is not shown as text"


def test_candidate_payloads_do_not_run_and_show_as_text(page, live_server, login, project_with_payloads):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    login(page, "bob")
    page.goto(f"{live_server.url}/projects/{project_with_payloads.pk}/annotate/")
    page.wait_for_selector("#task-panel[data-state=task][data-ready]")
    assert_inert(page, dialogs)

    first = page.get_attribute("#task-panel", "data-assignment-id")
    page.keyboard.press("0")
    page.keyboard.press("Enter")
    wait_for_new_panel(page, first)
    assert "Turn" in page.inner_text("#task-panel .prompt")
    assert_inert(page, dialogs)
