"""Shift rules over exported rows: each kind cuts rows into in-distribution and shifted in input order,
and a rule that cannot apply raises a ValueError naming the field."""

import pytest

from training.engine.lm.shift import ShiftRule, prompt_text, split_by_shift
from training.engine.lm.tiny import tiny_tokenizer


def rows():
    return [
        {
            "prompt": "ab",
            "chosen": "x",
            "rejected": "Y",
            "source": "wiki.jsonl",
            "metadata": {"topic": "cats"},
        },
        {"prompt": "abcdef", "chosen": "x", "rejected": "Y", "source": "forum.csv", "metadata": {"topic": 7}},
        {
            "prompt": [{"role": "system", "content": "abc"}, {"role": "user", "content": "de"}],
            "chosen": "x",
            "rejected": "Y",
            "source": "wiki.jsonl",
            "metadata": {},
        },
    ]


def test_a_rule_by_source_shifts_the_rows_of_the_listed_sources():
    split = split_by_shift(rows(), ShiftRule(kind="source", values=("forum.csv",)))
    assert [r["source"] for r in split.in_distribution] == ["wiki.jsonl", "wiki.jsonl"]
    assert [r["prompt"] for r in split.shifted] == ["abcdef"]


def test_a_rule_by_metadata_compares_values_as_text_and_keeps_rows_without_the_key_in_distribution():
    split = split_by_shift(rows(), ShiftRule(kind="metadata", key="topic", values=("7",)))
    assert [r["prompt"] for r in split.shifted] == ["abcdef"]
    assert len(split.in_distribution) == 2  # "cats", and the row without a topic


def test_a_rule_by_prompt_length_counts_characters_or_tokens():
    # prompts: "ab" (2), "abcdef" (6), "abc\nde" (6 characters; the turns joined by a newline)
    assert prompt_text(rows()[2]["prompt"]) == "abc\nde"
    split = split_by_shift(rows(), ShiftRule(kind="prompt_length", threshold=5))
    assert [len(prompt_text(r["prompt"])) for r in split.shifted] == [6, 6]
    assert [r["prompt"] for r in split.in_distribution] == ["ab"]
    by_tokens = split_by_shift(
        rows(), ShiftRule(kind="prompt_length", threshold=2, unit="tokens"), tokenizer=tiny_tokenizer()
    )
    assert len(by_tokens.in_distribution) == 1 and len(by_tokens.shifted) == 2  # one token per character


def test_a_rule_round_trips_through_its_dict():
    for rule in (
        ShiftRule(kind="source", values=("a", "b")),
        ShiftRule(kind="metadata", key="topic", values=("x",)),
        ShiftRule(kind="prompt_length", threshold=12, unit="tokens"),
    ):
        assert ShiftRule.from_dict(rule.to_dict()) == rule


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kind": "topic"}, "kind"),
        ({"kind": "source"}, "values"),
        ({"kind": "source", "values": (" ",)}, "values"),
        ({"kind": "metadata", "values": ("x",)}, "key"),
        ({"kind": "prompt_length"}, "threshold"),
        ({"kind": "prompt_length", "threshold": -1}, "threshold"),
        ({"kind": "prompt_length", "threshold": 3, "unit": "words"}, "unit"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_field(fields, named):
    with pytest.raises(ValueError, match=rf"^{named}: "):
        ShiftRule(**fields)


def test_unknown_fields_in_a_stored_rule_are_named():
    with pytest.raises(ValueError, match="^field: unknown"):
        ShiftRule.from_dict({"kind": "source", "values": ["a"], "field": "x"})


@pytest.mark.parametrize(
    ("rule", "data", "named"),
    [
        (ShiftRule(kind="source", values=("a",)), [{"prompt": "p"}], "source"),
        (ShiftRule(kind="metadata", key="k", values=("a",)), [{"prompt": "p", "metadata": None}], "metadata"),
        (ShiftRule(kind="metadata", key="nowhere", values=("a",)), rows(), "key"),
        (ShiftRule(kind="source", values=("absent.csv",)), rows(), "values"),
        (ShiftRule(kind="source", values=("wiki.jsonl", "forum.csv")), rows(), "values"),
        (ShiftRule(kind="prompt_length", threshold=100), rows(), "threshold"),
        (ShiftRule(kind="prompt_length", threshold=0), rows(), "threshold"),
        (ShiftRule(kind="prompt_length", threshold=3, unit="tokens"), rows(), "unit"),  # no tokenizer
    ],
)
def test_a_rule_that_cannot_apply_raises_naming_the_field(rule, data, named):
    with pytest.raises(ValueError, match=rf"^{named}: "):
        split_by_shift(data, rule)


def test_a_rule_that_finds_no_shifted_row_lists_the_values_it_saw():
    with pytest.raises(ValueError, match=r"values seen: wiki\.jsonl \(2\), forum\.csv \(1\)"):
        split_by_shift(rows(), ShiftRule(kind="source", values=("absent.csv",)))
