"""Launch presets and the run-time estimate (``training/presets.py``): the quick preset fills the form
for the preference methods, and the form states the expected run time where a step time was measured."""

import pytest

from tests.training_support import dataset_version
from training.presets import (
    GENERATION_SECONDS,
    LOAD_SECONDS,
    QUICK,
    REFERENCE_SECONDS_PER_ROW,
    STEP_SECONDS,
    expected_seconds,
    preset_names,
    preset_values,
)
from training.services.registry import model_entry_ensure_bundled


def test_quick_is_offered_where_the_config_takes_every_quick_field():
    assert preset_names("dpo") == ["paper", "quick"] and preset_names("ipo") == ["paper", "quick"]
    assert preset_names("ppo") == ["paper"]
    assert preset_values("dpo", "quick") == QUICK and preset_values("ppo", "quick") == {}
    assert preset_values("dpo", "paper") == {}


def test_expected_seconds_needs_a_measured_step_time():
    quick = {**QUICK}
    seconds = expected_seconds(model="bundled", config=quick, steps=30, rows=12, generations=4)
    # the estimate is arithmetic on measured constants (the measurement itself is bench/quick_preset.py)
    assert (
        seconds
        == LOAD_SECONDS
        + 30 * STEP_SECONDS[("bundled", True, 4, 256)]
        + 12 * REFERENCE_SECONDS_PER_ROW
        + 4 * GENERATION_SECONDS
    )
    assert (
        expected_seconds(model="bundled", config={**quick, "lora": False}, steps=30, rows=12, generations=4)
        is None
    )
    assert expected_seconds(model="", config=quick, steps=30, rows=12, generations=4) is None


@pytest.mark.django_db
def test_the_launch_form_fills_the_quick_preset_and_states_the_run_time(manager_client, project):
    model_entry_ensure_bundled()
    dataset_version(project, train=8, test=4)
    page = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=dpo&preset=quick")
    form, html = page.context["form"], page.content.decode()
    assert (
        form["lora"].value() is True
        and form["max_steps"].value() == 30
        and form["learning_rate"].value() == 5e-4
    )
    assert page.context["estimate"]["steps"] == 30 and page.context["estimate"]["minutes"] >= 1
    assert 'id="preset-select"' in html and "expected run time about" in html
    paper = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=dpo")
    assert paper.context["form"]["lora"].value() is False  # paper defaults stay the default
    assert "no measured step time" in paper.content.decode()
