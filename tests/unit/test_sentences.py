import pytest

from annotation.text.sentences import sentence_spans, spans_for_sentences, split_sentences


def test_splits_plain_sentences_on_terminators():
    assert split_sentences("Paris is in France. Is it big? Yes!") == [
        "Paris is in France.",
        "Is it big?",
        "Yes!",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith met Mrs. Jones at noon.",
        "Use a tool, e.g. a hammer, for this.",
        "The U.S. economy grew last year.",
        "J. K. Rowling wrote the books.",
        "It costs 3.50 dollars per 1.5 litres.",
        "Version 1.2.3 is at example.com today.",
        "I like apples, pears, etc. and more fruit.",
    ],
)
def test_abbreviations_initials_decimals_and_domains_do_not_split(text):
    assert split_sentences(text) == [text]


def test_inline_code_is_never_split():
    text = "Call `obj.run(). Then` now. Done."
    assert split_sentences(text) == ["Call `obj.run(). Then` now.", "Done."]


def test_fenced_code_block_is_one_segment():
    text = "Run this:\n```python\nx = 1. Y = 2.\nprint(x)\n```\nIt prints 1. Good."
    assert split_sentences(text) == [
        "Run this:",
        "```python\nx = 1. Y = 2.\nprint(x)\n```",
        "It prints 1.",
        "Good.",
    ]


def test_list_items_and_line_breaks_are_sentences():
    text = "Steps:\n1. Mix the flour.\n2. Bake it. Serve warm."
    assert split_sentences(text) == ["Steps:", "1. Mix the flour.", "2. Bake it.", "Serve warm."]


def test_closing_quotes_stay_with_their_sentence():
    assert split_sentences('He said "Stop." Then he left.') == ['He said "Stop."', "Then he left."]


def test_spans_index_the_original_text_with_whitespace_trimmed():
    text = "  First one.   Second one.\n\n Third "
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["First one.", "Second one.", "Third"]
    assert spans[0] == (2, 12)


def test_empty_and_blank_text_give_no_sentences():
    assert split_sentences("") == []
    assert split_sentences("  \n ") == []
    assert split_sentences(None) == []


def test_spans_for_given_sentences_are_found_in_order_or_none():
    text = "A cat. A dog. A cat."
    assert spans_for_sentences(text, ["A cat.", "A cat.", "A bird."]) == [(0, 6), (14, 20), None]
