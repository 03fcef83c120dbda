"""Keyboard and screens, in headless Chromium: Enter submits even after the guidelines were toggled by a
click, an untouched ranking asks before it is kept, picture-in-picture keeps the responses clear of the
dock, keys are shown as they are typed, and the project page leads with what comes next."""

import pytest

from annotation.models import Assignment, AssignmentState, Judgment
from tests import screen_data as sd
from tests.e2e.conftest import wait_for_new_panel
from tests.e2e.test_screen_flows import open_screen, press
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory, pair_task
from tests.training_support import dataset_version

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Per screen: the task builder and the keys that make its judgment submittable.
SCREENS = {
    "pairwise": (pair_task, ["1"]),
    "ranking": (sd.ranking_task, ["3", "ArrowUp"]),
    "stepwise": (sd.steps_task, ["c", "c", "c"]),
    "factuality": (sd.facts_task, ["f", "f"]),
    "multi_image": (sd.multi_image_task, ["1"]),
    "image_pair": (sd.image_pair_task, ["1"]),
}
# Each kbd as it is drawn (innerText applies text-transform) against its text: uppercased "e" shows "E".
KEYS_AS_DRAWN = """sel => [...document.querySelectorAll(sel)]
  .filter(k => k.checkVisibility({visibilityProperty: true}))
  .map(k => [k.innerText.trim(), k.textContent.trim()])"""
MEASURE_PIP = """() => {
  const box = el => { const r = el.getBoundingClientRect(); return {top: r.top, bottom: r.bottom}; };
  const shots = [...document.querySelectorAll('.gallery .shot')].filter(s => s.offsetParent !== null);
  return {
    dock: box(document.querySelector('.judge-dock')),
    gallery: box(document.querySelector('.gallery')),
    responses: [...document.querySelectorAll('.pair .candidate')].map(box),
    insets: shots.slice(1).map(box),
    atEnd: Math.abs(scrollY + innerHeight - document.documentElement.scrollHeight) < 2,
  };
}"""


def guidelines_open(page) -> bool:
    return page.evaluate("() => document.getElementById('guidelines').open")


def keys_drawn_as_typed(page, selector: str) -> None:
    keys = page.evaluate(KEYS_AS_DRAWN, selector)
    assert keys, f"no key shown in {selector}"
    wrong = [(drawn, typed) for drawn, typed in keys if drawn != typed]
    assert wrong == [], f"keys drawn otherwise than typed (drawn, typed): {wrong}"


def no_judgment_yet(assignment_id: str) -> None:
    assert Assignment.objects.get(pk=assignment_id).state == AssignmentState.ACTIVE
    assert not Judgment.objects.exists()


# --- 1. Enter submits, whatever the guidelines toggle did with focus ----------------------------------


@pytest.mark.parametrize("task_type", list(SCREENS))
def test_enter_submits_after_a_click_on_the_guidelines_and_types_a_newline_in_the_rationale(
    page, live_server, login, task_type
):
    build, keys = SCREENS[task_type]
    open_screen(page, live_server, login, task_type, build)
    before = page.get_attribute("#task-panel", "data-assignment-id")
    keys_drawn_as_typed(page, "#task-panel kbd")
    press(page, *keys)

    page.click("textarea[name=rationale]")  # Enter in a text box is a new line, not a submission
    page.keyboard.type("first line")
    press(page, "Enter")
    page.keyboard.type("second line")
    assert page.input_value("textarea[name=rationale]") == "first line\nsecond line"
    no_judgment_yet(before)

    page.click("#guidelines summary")  # open, read, close: focus stays on the toggle
    assert guidelines_open(page)
    page.click("#guidelines summary")
    assert not guidelines_open(page)
    assert page.evaluate("() => document.activeElement.matches('#guidelines summary')")
    press(page, "Enter")
    wait_for_new_panel(page, before)
    assert not guidelines_open(page), "Enter re-opened the guidelines"
    judgment = Judgment.objects.get(task=Assignment.objects.get(pk=before).task)
    assert judgment.rationale == "first line\nsecond line"


def test_space_still_toggles_the_guidelines_from_the_keyboard(page, live_server, login):
    open_screen(page, live_server, login, "pairwise", pair_task)
    page.focus("#guidelines summary")
    press(page, "Space")
    assert guidelines_open(page)
    press(page, "Space")
    assert not guidelines_open(page)
    no_judgment_yet(page.get_attribute("#task-panel", "data-assignment-id"))


def test_enter_submits_when_the_help_button_kept_focus(page, live_server, login):
    open_screen(page, live_server, login, "pairwise", pair_task)
    before = page.get_attribute("#task-panel", "data-assignment-id")
    page.click("[data-action=help][aria-controls=help-overlay]")
    assert page.is_visible("#help-overlay")
    press(page, "Escape", "2", "Enter")
    wait_for_new_panel(page, before)
    assert not page.is_visible("#help-overlay")


# --- 2. An untouched ranking asks before it is kept ---------------------------------------------------


def rank_tasks(project):
    return [sd.ranking_task(project, texts=(f"{n} one", f"{n} two", f"{n} three")) for n in "xyz"]


def test_an_untouched_ranking_asks_to_keep_the_order_and_a_second_enter_keeps_it(
    page, live_server, login, screenshot_dir
):
    open_screen(page, live_server, login, "ranking", rank_tasks)
    first = page.get_attribute("#task-panel", "data-assignment-id")
    assert not page.is_visible("#keep-order")
    press(page, "Enter")
    page.wait_for_selector("#keep-order", state="visible")
    assert "not changed the order" in page.inner_text("#keep-order")
    page.screenshot(path=str(screenshot_dir / "ranking_keep_order.png"))
    no_judgment_yet(first)
    press(page, "Escape")  # Esc puts the question away; the next Enter asks again
    assert not page.is_visible("#keep-order")
    press(page, "Enter")
    page.wait_for_selector("#keep-order", state="visible")
    no_judgment_yet(first)
    press(page, "Enter")  # the second Enter keeps the order shown
    wait_for_new_panel(page, first)
    kept = Assignment.objects.get(pk=first)
    assert Judgment.objects.get(task=kept.task).ranking == [[c] for c in kept.shown_order]

    second = page.get_attribute("#task-panel", "data-assignment-id")
    page.click("#submit-judgment")  # the button asks too; "Keep this order" keeps it
    page.wait_for_selector("#keep-order", state="visible")
    assert not Judgment.objects.filter(task=Assignment.objects.get(pk=second).task).exists()
    page.click("[data-action=rank-keep]")
    wait_for_new_panel(page, second)
    kept = Assignment.objects.get(pk=second)
    assert Judgment.objects.get(task=kept.task).ranking == [[c] for c in kept.shown_order]

    third = page.get_attribute("#task-panel", "data-assignment-id")
    press(page, "3", "ArrowUp", "Enter")  # a changed order is sent at once
    wait_for_new_panel(page, third)
    moved = Assignment.objects.get(pk=third)
    a, b, c = moved.shown_order
    assert Judgment.objects.get(task=moved.task).ranking == [[a], [c], [b]]


# --- 3. Picture-in-picture: responses clear of the dock and of the insets ----------------------------


@pytest.mark.parametrize(("width", "height"), [(1440, 960), (1280, 720), (900, 700)])
def test_picture_in_picture_keeps_every_response_above_the_dock(
    page, live_server, login, screenshot_dir, width, height
):
    page.set_viewport_size({"width": width, "height": height})
    colors = ("red", "green", "blue", "orange", "purple")  # four insets: the tallest column
    open_screen(
        page,
        live_server,
        login,
        "multi_image",
        lambda p: sd.multi_image_task(
            p, prompt="Which one is blue?", colors=colors, texts=("long " * 400, "3")
        ),
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')].every(i => i.naturalWidth > 0)"
    )
    while page.get_attribute(".gallery", "data-layout") != "pip":
        press(page, "l")
    top = page.evaluate(MEASURE_PIP)
    first_response = min(r["top"] for r in top["responses"])
    for inset in top["insets"]:
        assert inset["bottom"] <= top["gallery"]["bottom"] + 0.5, f"an inset hangs out of the gallery: {top}"
        assert inset["bottom"] <= first_response, f"an inset covers a response: {top}"
    if (width, height) == (1440, 960):
        page.screenshot(path=str(screenshot_dir / "pip_layout.png"))

    page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function(
        "() => Math.abs(scrollY + innerHeight - document.documentElement.scrollHeight) < 2"
    )
    end = page.evaluate(MEASURE_PIP)
    assert end["atEnd"]
    last = max(r["bottom"] for r in end["responses"])
    assert last <= end["dock"]["top"], f"the last response ends under the dock: {end}"


# --- 4. The step-wise screen shows each key as it is typed -------------------------------------------


def test_the_step_screen_shows_each_key_as_typed_and_each_shown_key_works(
    page, live_server, login, screenshot_dir
):
    open_screen(page, live_server, login, "stepwise", sd.steps_task)
    keys_drawn_as_typed(page, "#task-panel kbd")
    assert page.inner_text("label.correction kbd") == "e"  # not "E" (Shift+e) from its uppercase label
    tags = page.eval_on_selector_all(".label-row[data-index='0'] .tag kbd", "ks => ks.map(k => k.innerText)")
    assert tags == ["c", "n", "w"]
    press(page, "?")
    keys_drawn_as_typed(page, "#help-overlay kbd")
    help_keys = page.eval_on_selector_all("#help-overlay kbd", "ks => ks.map(k => k.innerText)")
    assert {"c", "n", "w", "e", "j", "k", "s", "?"} <= set(help_keys)
    page.screenshot(path=str(screenshot_dir / "steps_keys.png"))
    press(page, "Escape")

    selected = "() => document.querySelector('.label-row.is-selected').dataset.index"
    press(page, "j")
    assert page.evaluate(selected) == "1"
    press(page, "k")
    assert page.evaluate(selected) == "0"
    press(page, "c", "n", "w")
    labels = page.eval_on_selector_all(".label-row", "rows => rows.map(r => r.dataset.label)")
    assert labels == ["correct", "neutral", "wrong"]
    press(page, "e")
    assert page.evaluate("() => document.activeElement.name") == "corrected_step"


# --- 6. The project page -----------------------------------------------------------------------------


def action_tops(page) -> list[float]:
    """The top of each action shown in the page's action row (links hidden in the menu excluded)."""
    return page.eval_on_selector_all(
        "#project-actions > a, #project-actions > details > summary",
        "els => els.filter(e => e.offsetParent !== null).map(e => e.getBoundingClientRect().top)",
    )


def test_an_empty_project_leads_with_import(page, live_server, login, screenshot_dir):
    manager = UserFactory(username="maria")
    project = ProjectFactory(name="Fresh project")
    MembershipFactory(project=project, user=manager, role="manager")
    login(page, "maria")
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    cta = page.locator("#import-cta")
    assert cta.is_visible() and "no items yet" in cta.inner_text()
    page.screenshot(path=str(screenshot_dir / "project_empty.png"), full_page=True)
    head = page.locator(".project-head").bounding_box()
    box = cta.bounding_box()
    assert box["y"] >= head["y"] + head["height"] - 1  # right under the title: the first thing to read
    assert box["y"] < page.locator("#guidelines").bounding_box()["y"]
    page.click("#import-start")
    page.wait_for_url(f"**/projects/{project.pk}/import/")


def test_the_project_actions_fit_one_row_and_the_rest_sit_in_the_more_menu(
    page, live_server, login, screenshot_dir
):
    manager = UserFactory(username="maria", is_staff=True)
    project = ProjectFactory(name="Helpfulness", task_type="stepwise")  # the most menu entries
    MembershipFactory(project=project, user=manager, role="manager")
    for name in ("ana", "bo"):
        MembershipFactory(project=project, user=UserFactory(username=name), role="annotator")
    pair_task(project)
    ItemFactory(project=project)
    dataset_version(project)
    login(page, "maria")
    assert page.viewport_size["width"] == 1440
    page.goto(f"{live_server.url}/projects/{project.pk}/")

    tops = action_tops(page)
    assert len(tops) >= 4 and max(tops) - min(tops) < 1, f"the actions wrap onto several rows: {tops}"
    links = page.eval_on_selector_all(
        "#project-actions a",
        "as => as.map(a => [a.textContent.trim(), a.offsetParent !== null, !!a.closest('details')])",
    )
    assert [text for text, shown, in_menu in links if not shown and not in_menu] == []
    assert {text for text, _, in_menu in links if in_menu} >= {"Import", "Agreement", "Gold", "Settings"}

    page.click("#more-actions summary")
    menu = page.locator("#more-actions .menu")
    assert menu.is_visible() and menu.locator("a").count() >= 8
    assert all(menu.locator("a").nth(i).is_visible() for i in range(menu.locator("a").count()))
    members = page.locator("section.card#members li").all_inner_texts()
    assert sorted(member.split()[0] for member in members) == ["ana", "bo", "maria"]
    page.screenshot(path=str(screenshot_dir / "project_page.png"), full_page=True)
    page.click("#more-actions a:has-text('Agreement')")
    page.wait_for_url(f"**/projects/{project.pk}/agreement/")


def test_an_annotator_sees_their_actions_in_one_row(page, live_server, login):
    annotator = UserFactory(username="ana")
    project = ProjectFactory(name="Helpfulness")
    MembershipFactory(project=project, user=annotator, role="annotator")
    pair_task(project)
    login(page, "ana")
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    tops = action_tops(page)
    assert len(tops) == 3 and max(tops) - min(tops) < 1
    assert page.locator("#more-actions").count() == 0
