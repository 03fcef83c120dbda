"""The launch form lists the methods by family with a one-line description, offers those of the project's
kind, marks those that do not fit the chosen version (and why), and with no frozen version says so and
links to freezing."""

import re

import pytest

from annotation.models import DatasetExample
from tests.training_support import dataset_version
from training.engine import METHODS
from training.method_families import FAMILIES, method_summary


def test_every_method_is_in_exactly_one_family():
    listed = [name for _, names in FAMILIES for name in names]
    assert sorted(listed) == sorted(METHODS) and len(listed) == len(set(listed))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_summary_is_one_sentence_without_markup(name):
    summary = method_summary(name)
    assert summary and "``" not in summary and not summary.endswith(".")
    assert len(summary) < 120, summary


def test_diffusion_dpo_says_what_it_is_and_not_its_beta_convention():
    assert method_summary("diffusion_dpo").endswith("from judged image pairs")


def _options(html: str) -> dict:
    """``{family: [(value, disabled, text)]}`` of the method select."""
    select = html[html.index('id="method-select"') :].split("</select>")[0]
    groups = {}
    for label, body in re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', select, re.S):
        groups[label] = [
            (value, " disabled" in attrs, text.strip())
            for value, attrs, text in re.findall(r'<option value="([^"]+)"([^>]*)>([^<]*)</option>', body)
        ]
    return groups


def test_a_pairwise_project_lists_its_methods_by_family_with_summaries(manager_client, project):
    dataset_version(project)
    html = manager_client.get(f"/projects/{project.pk}/jobs/new/").content.decode()
    groups = _options(html)
    assert list(groups) == [
        "Preference pairs (DPO family)",
        "Adapters",
        "Reward model and reinforcement learning",
    ]
    names = [value for options in groups.values() for value, _, _ in options]
    assert "step_dpo" not in names and "diffusion_dpo" not in names  # other kinds' methods are not offered
    dpo = groups["Preference pairs (DPO family)"][0]
    assert dpo == ("dpo", False, "dpo — DPO (sigmoid loss)")
    assert not any(disabled for options in groups.values() for _, disabled, _ in options)
    assert 'id="no-version"' not in html


def test_methods_that_do_not_fit_the_chosen_version_are_shown_disabled_with_the_reason(
    manager_client, project
):
    version = dataset_version(project)
    DatasetExample.objects.filter(version=version, split="train").delete()
    html = manager_client.get(f"/projects/{project.pk}/jobs/new/?version={version.pk}").content.decode()
    options = [o for group in _options(html).values() for o in group]
    ipo = next(o for o in options if o[0] == "ipo")
    assert ipo[1] and f"not for this version: {version} has no training rows" in ipo[2]
    dpo = next(o for o in options if o[0] == "dpo")
    assert not dpo[1]  # the method shown stays selectable; the form says why it cannot launch
    assert f'<input type="hidden" name="version" value="{version.pk}">' in html  # kept when switching method


def test_a_project_without_a_frozen_version_says_so_and_links_to_freezing(manager_client, project):
    html = manager_client.get(f"/projects/{project.pk}/jobs/new/").content.decode()
    card = html[html.index('id="no-version"') :].split("</section>")[0]
    assert "No frozen dataset version yet" in card
    assert f'href="/projects/{project.pk}/versions/#freeze-form"' in card
    assert re.search(r'id="launch-job"\s+disabled', html)
