"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python, against live_server."""

import os
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, HAVE_CHROMIUM
from tests.factories import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser(live_server):
    """One Chromium per test module, started after (so stopped before) the live server and test DB.

    Module scope keeps DJANGO_ALLOW_ASYNC_UNSAFE (below) from leaking into the rest of the suite.
    """
    if not HAVE_CHROMIUM:
        pytest.skip(f"Debian chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread while it runs; the test's own ORM calls
    # are ordinary synchronous calls, so tell Django's async-safety check to let them through.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1440, "height": 960}, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def login(live_server):
    """Log in through the login form, as a person would."""

    def log_in(page, username: str, password: str = PASSWORD):
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)

    return log_in


@pytest.fixture
def screenshot_dir():
    path = ARTIFACTS / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_for_new_panel(page, before: str) -> None:
    """Until htmx has swapped in (and settled) a panel for another assignment."""
    page.wait_for_function(
        "id => { const p = document.getElementById('task-panel');"
        " return p.dataset.assignmentId !== id && p.dataset.ready === '1'; }",
        arg=before,
    )
