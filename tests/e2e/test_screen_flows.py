"""Each of the five other annotation screens, judged by keyboard alone in headless Chromium.

One browser for the module; each test logs in, completes a judgment with keys only, takes the
screenshot ``test-artifacts/screenshots/<task type>.png`` and checks what was stored.
"""

import pytest

from annotation.models import Assignment, Judgment
from tests import screen_data as sd
from tests.e2e.conftest import wait_for_new_panel
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def open_screen(page, live_server, login, task_type, *builders):
    user = UserFactory(username="alice")
    project = ProjectFactory(name=f"{task_type} project", task_type=task_type, guidelines="Be **careful**.")
    MembershipFactory(project=project, user=user, role="annotator")
    tasks = [build(project) for build in builders]
    login(page, "alice")
    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    page.wait_for_selector("#task-panel[data-state=task][data-ready]")
    page.evaluate("window.__loads = 1")
    return user, project, tasks


def press(page, *keys):
    for key in keys:
        page.keyboard.press(key)


def submit_and_wait(page):
    before = page.get_attribute("#task-panel", "data-assignment-id")
    page.keyboard.press("Enter")
    wait_for_new_panel(page, before)
    assert page.evaluate("window.__loads") == 1, "the page reloaded instead of swapping the panel"
    return Assignment.objects.get(pk=before)


def test_ranking_by_keys_with_a_tie_and_a_rating(page, live_server, login, screenshot_dir):
    _user, _project, _ = open_screen(
        page, live_server, login, "ranking", lambda p: sd.ranking_task(p, texts=("one", "two", "three"))
    )
    press(page, "3", "ArrowUp", "ArrowUp", "Shift+ArrowDown", "Shift+ArrowDown", "t", "r", "4")
    assert page.inner_text("#rank-summary").replace(" ", "") == "C>A=B"
    page.screenshot(path=str(screenshot_dir / "ranking.png"))
    assignment = submit_and_wait(page)
    page.wait_for_selector("#all-done")
    a, b, c = assignment.shown_order
    judgment = Judgment.objects.get(task=assignment.task)
    assert judgment.ranking == [[c], [a, b]] and judgment.ratings == {str(b): 4}
    assert judgment.time_spent_ms > 0


def test_ranking_cards_reorder_by_drag_and_drop(page, live_server, login):
    open_screen(
        page, live_server, login, "ranking", lambda p: sd.ranking_task(p, texts=("one", "two", "three"))
    )
    page.drag_and_drop(
        ".rank-card[data-letter=C] .rank-side", ".rank-card[data-letter=A]", target_position={"x": 30, "y": 4}
    )
    assert page.inner_text("#rank-summary").replace(" ", "") == "C>A>B"
    ids = page.eval_on_selector_all(".rank-card", "cards => cards.map(c => Number(c.dataset.id))")
    assert page.input_value("input[name=ranking]") == str([[i] for i in ids]).replace(" ", "")


def test_step_labels_stop_at_the_first_wrong_step_with_a_correction(page, live_server, login, screenshot_dir):
    steps = ("Let x be the number.", "Then 2x = 6.", "So x = 4.", "The answer is 4.")
    open_screen(
        page,
        live_server,
        login,
        "stepwise",
        lambda p: sd.steps_task(p, prompt="Twice a number is 6. What is it?", steps=steps),
        lambda p: sd.step_pair_task(p, prompt="Tom has 3 apples and buys 2. How many?"),
    )
    press(page, "Enter")  # nothing labelled yet: a hint, no request
    assert "Step 1 has no label yet" in page.inner_text("#judgment-form .client-error")
    press(page, "c", "n", "w", "e")
    page.keyboard.type("So x = 3.")
    press(page, "Escape")
    assert page.get_attribute(".label-row[data-index='3']", "class").count("is-out") == 1
    page.screenshot(path=str(screenshot_dir / "stepwise.png"))
    assignment = submit_and_wait(page)
    judgment = Judgment.objects.get(task=assignment.task)
    assert judgment.step_labels == ["correct", "neutral", "wrong"]
    assert (judgment.first_wrong_step, judgment.corrected_step) == (2, "So x = 3.")
    assert judgment.time_spent_ms > 0

    page.wait_for_selector("#task-panel[data-screen=steps_pair]")  # the next-step pair reuses the pair form
    press(page, "2")
    page.screenshot(path=str(screenshot_dir / "stepwise_pair.png"))
    pair = submit_and_wait(page)
    assert Judgment.objects.get(task=pair.task).choice in ("a", "b")


def test_sentence_labels_with_a_correction(page, live_server, login, screenshot_dir):
    text = "Paris is the capital of France. It has 90 million people. I hope this helps!"
    open_screen(
        page,
        live_server,
        login,
        "factuality",
        lambda p: sd.facts_task(p, prompt="Tell me about Paris.", text=text),
    )
    press(page, "f", "e")
    page.keyboard.type("It has about 2 million people.")
    press(page, "Escape", "ArrowDown", "x")
    page.screenshot(path=str(screenshot_dir / "factuality.png"))
    assignment = submit_and_wait(page)
    judgment = Judgment.objects.get(task=assignment.task)
    assert judgment.time_spent_ms > 0
    assert judgment.sentence_labels == [
        {"label": "factual"},
        {"label": "hallucinated", "correction": "It has about 2 million people."},
        {"label": "not_claim"},
    ]


def test_multi_image_layouts_zoom_and_pairwise_choice(page, live_server, login, screenshot_dir):
    open_screen(
        page,
        live_server,
        login,
        "multi_image",
        lambda p: sd.multi_image_task(
            p, prompt="Which image shows the blue square?", texts=("The third", "The first")
        ),
    )
    # a function, not a bare expression: Playwright polls an expression through eval, which the CSP blocks
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')].every(i => i.naturalWidth > 0)"
    )
    press(page, "l")
    assert page.get_attribute(".gallery", "data-layout") == "pip"
    press(page, "l", "l", "z", "ArrowRight")
    assert page.is_visible("#lightbox") and "Image 2" in page.inner_text("#lightbox figcaption")
    press(page, "Escape")
    assert not page.is_visible("#lightbox")
    press(page, "1", "Shift+3")
    page.screenshot(path=str(screenshot_dir / "multi_image.png"))
    assignment = submit_and_wait(page)
    judgment = Judgment.objects.get(task=assignment.task)
    assert judgment.strength == 3 and judgment.time_spent_ms > 0
    assert judgment.choice == ("a" if assignment.shown_order[0] == assignment.task.candidate_ids[0] else "b")


def test_image_pair_tie_by_key_and_zoom(page, live_server, login, screenshot_dir):
    open_screen(
        page,
        live_server,
        login,
        "image_pair",
        lambda p: sd.image_pair_task(p, caption="An orange square next to a purple one"),
        lambda p: sd.image_pair_task(p, caption="A green field", colors=("green", "gray")),
    )
    press(page, "z")
    assert page.is_visible("#lightbox")
    press(page, "Escape", "0")
    page.screenshot(path=str(screenshot_dir / "image_pair.png"))
    first = submit_and_wait(page)
    press(page, "2")
    second = submit_and_wait(page)
    tie = Judgment.objects.get(task=first.task)
    assert (tie.choice, tie.label_score, tie.strength) == ("tie", 0.5, None) and tie.time_spent_ms > 0
    right = Judgment.objects.get(task=second.task)
    expected = "a" if second.shown_order[1] == second.task.candidate_ids[0] else "b"
    assert (right.choice, right.label_score) == (expected, 1.0 if expected == "a" else 0.0)
