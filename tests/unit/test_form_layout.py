"""The launch form reads as settings, not as a dataclass: labels in words, help without markup or "None",
fields grouped under headings, closed choices as selects (``training/form_layout.py``)."""

import pytest

from training.form_layout import field_group, field_label, help_text


def test_labels_are_words_and_known_symbols():
    assert field_label("warmup_ratio") == "Warmup ratio"
    assert field_label("adam_beta1") == "Adam β₁" and field_label("lora_r") == "LoRA rank"


def test_help_text_drops_rest_markup_and_says_empty_for_none():
    assert help_text('Further terms: ``{"name": ...}`` (objectives registry).') == (
        'Further terms: {"name": ...} (objectives registry).'
    )
    assert (
        help_text("Stop after N steps (None = run all epochs).")
        == "Stop after N steps (empty: run all epochs)."
    )
    assert (
        help_text("The *original* base; None = the starting weights.")
        == "The original base; empty: the starting weights."
    )
    assert help_text("a spec or None") == "a spec or empty"


def test_every_field_has_a_group():
    assert field_group("learning_rate") == "optimisation" and field_group("lora_alpha") == "lora"
    assert field_group("keep_checkpoints") == "evaluation" and field_group("precision") == "advanced"
    assert field_group("beta") == "method" and field_group("fast_lr_ratio") == "method"


@pytest.mark.django_db
def test_the_launch_form_groups_its_fields_with_labels_and_selects(manager_client, project):
    page = manager_client.get(f"/projects/{project.pk}/jobs/new/?method=dpo")
    html = page.content.decode()
    titles = [title for title, _ in page.context["form"].hyper_groups()]
    assert titles == ["Method", "Optimisation", "LoRA", "Evaluation and checkpoints", "Advanced"]
    assert "<h2>dpo</h2>" in html and ">Learning-rate schedule</label>" in html
    assert '<select name="device"' in html and "``" not in html and "None =" not in html
    groups = dict(page.context["form"].hyper_groups())
    assert "eval_generations" in [f.name for f in groups["Evaluation and checkpoints"]]
