"""Factuality export rows follow Mask-DPO (docs/methods.md): one highest-vs-lowest pair per prompt,
exclusion rules, and per-sentence character spans the engine turns into token masks."""

from annotation.services.version_rows import Vote, factuality_rows, sentence_label, sentence_verdicts
from annotation.services.versions import FreezeRule

ITEM = {"prompt": "Tell me about Paris.", "messages": None, "metadata": {}}


def response(text, sentences):
    return {"text": text, "messages": None, "sentences": sentences}


GOOD = response("Paris is in France. It is big.", ["Paris is in France.", "It is big."])
MIXED = response("Paris is in Spain. It is big.", ["Paris is in Spain.", "It is big."])
BAD = response("Paris is in Peru. It is tiny.", ["Paris is in Peru.", "It is tiny."])


def test_only_the_highest_and_lowest_factual_share_are_paired():
    rows = factuality_rows(
        ITEM,
        [(MIXED, ["hallucinated", "factual"]), (GOOD, ["factual", "factual"]), (BAD, ["hallucinated"] * 2)],
    )
    assert len(rows) == 1
    assert (rows[0]["chosen"], rows[0]["rejected"]) == (GOOD["text"], BAD["text"])


def test_pair_is_dropped_when_chosen_has_no_factual_or_rejected_no_hallucinated_sentence():
    assert factuality_rows(ITEM, [(GOOD, ["no_claim", "no_claim"]), (BAD, ["hallucinated"] * 2)]) == []
    assert factuality_rows(ITEM, [(GOOD, ["factual", "factual"]), (BAD, ["factual", "no_claim"])]) == []
    assert (
        factuality_rows(ITEM, [(GOOD, ["factual", "hallucinated"]), (BAD, ["hallucinated", "factual"])]) == []
    )


def test_spans_are_character_offsets_into_the_response_with_engine_labels():
    (row,) = factuality_rows(ITEM, [(MIXED, ["hallucinated", "factual"]), (GOOD, ["factual", "factual"])])
    assert row["rejected_sentences"] == [
        {"text": "Paris is in Spain.", "start": 0, "end": 18, "label": "hallucinated"},
        {"text": "It is big.", "start": 19, "end": 29, "label": "factual"},
    ]
    for span in row["chosen_sentences"]:
        assert GOOD["text"][span["start"] : span["end"]] == span["text"]


def test_sentence_labels_from_screens_imports_and_booleans_are_normalised():
    assert [sentence_label(v) for v in (True, 0, "supported", {"label": "hallucinated"}, "not_claim")] == [
        "factual",
        "hallucinated",
        "factual",
        "hallucinated",
        "no_claim",
    ]
    votes = [
        Vote(sentence_labels=[{"label": "factual"}, {"label": "factual"}]),
        Vote(sentence_labels=[{"label": "factual"}, {"label": "hallucinated"}]),
    ]
    assert sentence_verdicts(votes, 2, FreezeRule()) == (["factual", "no_claim"], None)


def test_exported_spans_become_token_masks_in_the_engine():
    from training.engine.lm.data import tokenize_pair
    from training.engine.lm.tiny import tiny_tokenizer

    responses = [(MIXED, ["hallucinated", "hallucinated"]), (GOOD, ["factual", "hallucinated"])]
    (row,) = factuality_rows(ITEM, responses)
    pair = tokenize_pair(row, tiny_tokenizer(), 0)  # one token per character
    chosen_mask = "".join("1" if w else "0" for w in pair.chosen_weights)
    rejected_mask = "".join("1" if w else "0" for w in pair.rejected_weights)
    assert chosen_mask.startswith("1" * 19 + "0" * 11)  # only the factual "Paris is in France." counts
    assert rejected_mask.startswith("1" * 18 + "0" + "1" * 10)  # both hallucinated sentences count
