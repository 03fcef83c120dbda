"""Pure chart helpers: EMA smoothing, config differences, compare traces; the launch form's field docs."""

import math

import pytest

from training.charts import compare_series, config_differences, ema
from training.engine import METHODS
from training.forms import field_docs, method_fields


def test_ema_is_debiased_and_passes_gaps_through():
    assert ema([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])
    smoothed = ema([0.0, 10.0, None, 10.0], 0.5)
    assert smoothed[0] == 0.0 and smoothed[1] == pytest.approx(5 / 0.75) and smoothed[2] is None
    assert ema([2.0, math.nan], 0.0)[0] == 2.0


def test_config_differences_lists_only_fields_that_differ_and_ignores_paths():
    diffs = config_differences(
        {
            1: {"beta": 0.1, "lora": False, "output_dir": "/a", "lora_target_modules": ("q_proj",)},
            2: {"beta": 0.1, "lora": True, "output_dir": "/b", "lora_target_modules": ["q_proj"]},
        }
    )
    assert diffs == {"lora": {1: False, 2: True}}


def test_compare_series_gives_one_trace_per_job():
    traces = compare_series({3: [[1, 0.5, 0.0], [2, 0.4, 1.0]]}, labels={3: "job 3"})
    assert traces == [{"type": "scatter", "mode": "lines", "name": "job 3", "x": [1, 2], "y": [0.5, 0.4]}]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_field_gets_a_form_field_with_its_docstring(method):
    fields = method_fields(method)
    docs = field_docs(METHODS[method].config)
    assert "train_file" not in fields and "model" not in fields
    missing = [name for name in fields if not docs.get(name)]
    assert missing == [], f"{method}: no docstring for {missing}"


def test_fields_with_a_closed_set_of_values_are_selects_of_the_values_the_config_accepts():
    from django import forms

    from training.engine import config_from_dict

    fields = method_fields("dpo")
    closed = (
        ("strategy", "ddp"),
        ("fsdp_sharding", "full"),
        ("fsdp_wrap", "layer"),
        ("lr_scheduler", "linear"),
    )
    for name, default in closed:
        field = fields[name]
        assert isinstance(field, forms.ChoiceField) and field.initial == default, name
        for value, _ in field.choices:  # each value offered is one the engine takes
            base = {"method": "dpo", "model": "tiny", "train_file": "t.jsonl", "output_dir": "o"}
            assert getattr(config_from_dict({**base, name: value}), name) == value
    assert [v for v, _ in fields["strategy"].choices] == ["ddp", "fsdp"]


def test_config_differences_of_two_methods_mark_a_field_only_one_has():
    from training.charts import NOT_A_FIELD, difference_rows

    diffs = config_differences(
        {1: {"beta": 0.1, "ref_cache_dir": "/c"}, 2: {"kl_coef": 0.05, "reward_model": "local:/rm"}}
    )
    assert diffs == {
        "beta": {1: 0.1, 2: NOT_A_FIELD},
        "kl_coef": {1: NOT_A_FIELD, 2: 0.05},
        "reward_model": {1: NOT_A_FIELD, 2: "local:/rm"},
    }
    assert difference_rows(diffs, [2, 1])[0] == {"field": "beta", "cells": [NOT_A_FIELD, 0.1]}
    assert "not a field" in str(NOT_A_FIELD)
