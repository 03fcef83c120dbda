"""Templating, spans, masks, truncation, and packed vs unpacked log-probs."""

import pytest
import torch
from transformers import AttentionInterface

from training.engine.lm import logps, pair_attention
from training.engine.lm.collate import PackingCollator, plan_rows
from training.engine.lm.data import TokenizedPair, read_rows, tokenize_pair, tokenize_rows, truncate
from training.engine.lm.logps import segment_sums, split_by_segment, token_logps, unpacked_logps
from training.engine.lm.tiny import tiny_llama


def test_standard_and_conversational_rows_tokenize_the_same(tokenizer):
    std = tokenize_pair({"prompt": "Hi", "chosen": "yes", "rejected": "no"}, tokenizer, 0)
    conv = tokenize_pair(
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        },
        tokenizer,
        0,
    )
    assert std == conv
    assert tokenizer.decode(std.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(std.chosen_ids) == "yes<|im_end|>\n"
    assert all(w == 1.0 for w in std.chosen_weights)


def test_step_dpo_weights_only_the_step_tokens(tokenizer):
    row = {"prompt": "Q", "initial_reason_steps": "a=1\n", "chosen": "b=2", "rejected": "b=3"}
    pair = tokenize_pair(row, tokenizer, 0)
    assert tokenizer.decode(pair.prompt_ids).endswith("assistant\na=1\n")
    kept = [t for t, w in zip(pair.chosen_ids, pair.chosen_weights, strict=True) if w]
    assert tokenizer.decode(kept) == "b=2"


def test_mask_dpo_weights_factual_chosen_and_hallucinated_rejected(tokenizer):
    row = {
        "prompt": "Q",
        "chosen": "Good. Bad.",
        "rejected": "Fine. Wrong.",
        "chosen_sentences": [
            {"start": 0, "end": 5, "label": "factual"},
            {"start": 6, "end": 10, "label": "hallucinated"},
        ],
        "rejected_sentences": [
            {"start": 0, "end": 5, "label": "no_claim"},
            {"start": 6, "end": 12, "label": "hallucinated"},
        ],
    }
    pair = tokenize_pair(row, tokenizer, 0)
    chosen = [t for t, w in zip(pair.chosen_ids, pair.chosen_weights, strict=True) if w]
    rejected = [t for t, w in zip(pair.rejected_ids, pair.rejected_weights, strict=True) if w]
    assert tokenizer.decode(chosen) == "Good."
    assert tokenizer.decode(rejected) == "Wrong."


def test_truncation_keeps_prompt_start_and_counts_dropped_rows(tokenizer):
    rows = [
        {"prompt": "Hi", "chosen": "x" * 50, "rejected": "y"},
        {"prompt": "z" * 80, "chosen": "a", "rejected": "b"},
    ]
    pairs, report = tokenize_rows(rows, tokenizer, max_length=40)
    assert len(pairs) == 1 and report.dropped == {"prompt_fills_max_length": 1}
    assert len(pairs[0].prompt_ids) + len(pairs[0].chosen_ids) == 40
    masked = TokenizedPair((1, 2), (3,), (4,), (0.0,), (1.0,), 0)
    assert truncate(masked, None) == (None, "chosen_has_no_weighted_token")


def test_consistency_travels_from_the_rows_to_the_packed_batch(tokenizer):
    rows = [
        {"prompt": "Hi", "chosen": "x" * 30, "rejected": "y", "consistency": 0.25},
        {"prompt": "Ho", "chosen": "a", "rejected": "b"},
        {"prompt": "Ha", "chosen": "c", "rejected": "d", "consistency": None},
        {"prompt": "He", "chosen": "e", "rejected": "f", "consistency": 0},
    ]
    pairs, report = tokenize_rows(rows, tokenizer, max_length=30)  # the first row is truncated
    assert report.kept == 4 and not report.dropped
    assert [p.consistency for p in pairs] == [0.25, 1.0, 1.0, 0.0]
    batch = PackingCollator(tokenizer.pad_token_id, token_budget=40)(pairs[::-1])
    assert batch.input_ids.shape[0] > 1
    assert batch.consistency.tolist() == [0.0, 1.0, 1.0, 0.25]


def test_rows_with_an_unusable_consistency_are_dropped_by_reason(tokenizer):
    row = {"prompt": "Hi", "chosen": "a", "rejected": "b"}
    bad = [1.5, -0.1, float("inf"), "0.5", True, float("nan"), [0.5]]
    pairs, report = tokenize_rows(
        [{**row, "consistency": c} for c in [*bad, 1.0]], tokenizer, max_length=None
    )
    assert [p.index for p in pairs] == [7]
    assert report.dropped == {"consistency_outside_0_1": 3, "consistency_not_a_number": 4}
    with pytest.raises(ValueError, match=r"row 2: consistency outside 0 1 \(1\.5\)"):
        tokenize_pair({**row, "consistency": 1.5}, tokenizer, 2)


def test_the_dpo_recipe_hands_the_batch_consistency_to_the_cream_loss(tokenizer, tiny_model):
    from training.engine.objectives.preference import combine, dpo_loss
    from training.engine.recipes.dpo import pair_logps
    from training.engine.recipes.dpo_configs import CREAMConfig

    rows = [
        {"prompt": "Q", "chosen": "good", "rejected": "BAD", "consistency": 0.9},
        {"prompt": "R", "chosen": "fine", "rejected": "WRONG", "consistency": 0.3},
    ]
    pairs, _ = tokenize_rows(rows, tokenizer, max_length=None)
    batch = PackingCollator(tokenizer.pad_token_id)(pairs)
    terms = CREAMConfig(model="tiny", train_file="d.jsonl", output_dir="o").objective_terms()
    with torch.no_grad():
        lp = pair_logps(tiny_model, batch, torch.full((2,), -30.0), torch.full((2,), -40.0))
        loss, _ = combine(terms, lp)
        forward = dpo_loss(lp, beta=0.1).losses
        backward = dpo_loss(
            lp._replace(
                policy_chosen=lp.policy_rejected,
                policy_rejected=lp.policy_chosen,
                ref_chosen=lp.ref_rejected,
                ref_rejected=lp.ref_chosen,
            ),
            beta=0.1,
        ).losses
    c = torch.tensor([0.9, 0.3])
    assert float(loss) == pytest.approx(float((c * forward + (1 - c) * backward).mean()), rel=1e-6)


def test_read_rows_filters_split(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"prompt":"a","chosen":"b","rejected":"c","split":"test"}\n{"prompt":"d","chosen":"e","rejected":"f"}\n'
    )
    assert [r["prompt"] for r in read_rows(path, "train")] == ["d"]
    assert [r["prompt"] for r in read_rows(path, "test")] == ["a"]


def test_an_image_datasets_zip_export_is_refused_by_name_not_decoded(tmp_path):
    import zipfile

    path = tmp_path / "version-3.jsonl"  # what the worker once saved an image-pair export as
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.jsonl", '{"caption": "a cat"}\n')
    with pytest.raises(ValueError, match="a zip archive .* not preference rows"):
        read_rows(path)


@pytest.mark.parametrize(
    "extra",
    [{"images": ["images/ab.png"]}, {"jpg_0": "images/a.png", "jpg_1": "images/b.png"}],
)
def test_rows_with_images_are_refused_rather_than_trained_as_text(tokenizer, extra):
    row = {"prompt": "Which image?", "chosen": "the left", "rejected": "the right", **extra}
    with pytest.raises(
        ValueError, match="row 4: has images .* the text recipes would train on its text alone"
    ):
        tokenize_pair(row, tokenizer, 4)


def test_plan_rows_respects_budget():
    pair = TokenizedPair((1,) * 5, (2,) * 3, (3,) * 2, (1.0,) * 3, (1.0,) * 2, 0)  # 10 tokens
    assert plan_rows([pair] * 5, 25) == [[0, 1], [2, 3], [4]]
    assert plan_rows([pair] * 3, None) == [[0, 1, 2]]


@pytest.mark.parametrize("attention", ["pairs", "row_mask"])
@pytest.mark.parametrize("budget", [None, 60])
def test_packed_logps_equal_unpacked_forward(
    tokenizer, tiny_model, make_rows, budget, attention, monkeypatch
):
    pairs, _ = tokenize_rows(make_rows(5, seed=3), tokenizer, max_length=None)
    batch = PackingCollator(tokenizer.pad_token_id, token_budget=budget)(pairs)
    if budget:
        assert batch.input_ids.shape[0] > 1
    calls = _count_pair_attention(monkeypatch, enabled=attention == "pairs")
    with torch.no_grad():
        packed = split_by_segment(token_logps(tiny_model, batch), batch)
    assert (calls["n"] > 0) == (attention == "pairs")
    reference = unpacked_logps(tiny_model, pairs)
    for i, (chosen, rejected) in enumerate(reference):
        torch.testing.assert_close(packed[2 * i], chosen, atol=1e-4, rtol=0)
        torch.testing.assert_close(packed[2 * i + 1], rejected, atol=1e-4, rtol=0)
    sums_c, _ = segment_sums(torch.cat(packed), batch)
    assert sums_c.tolist() == pytest.approx([float(c.sum()) for c, _ in reference], abs=1e-3)


def test_mask_dpo_loss_ignores_tokens_outside_the_mask(tokenizer, tiny_model):
    from training.engine.lm.logps import segment_lengths
    from training.engine.lm.tiny import tiny_llama
    from training.engine.objectives.preference import PairLogps, dpo_loss

    reference = tiny_llama(len(tokenizer), seed=7)
    spans = {
        "chosen_sentences": [
            {"start": 0, "end": 5, "label": "factual"},
            {"start": 6, "end": 10, "label": "no_claim"},
        ],
        "rejected_sentences": [
            {"start": 0, "end": 5, "label": "hallucinated"},
            {"start": 6, "end": 12, "label": "factual"},
        ],
    }
    rows = [
        {"prompt": "Q", "chosen": "Good. Bad.", "rejected": "Fine. Wrong."},
        {"prompt": "Q", "chosen": "Good. Zzz.", "rejected": "Fine. Xyzwv."},  # only unmasked tokens differ
        {"prompt": "Q", "chosen": "Gold. Bad.", "rejected": "Fine. Wrong."},  # a masked token differs
    ]
    losses = []
    for row in rows:
        batch = PackingCollator(tokenizer.pad_token_id)([tokenize_pair({**row, **spans}, tokenizer, 0)])
        with torch.no_grad():
            pc, pr = segment_sums(token_logps(tiny_model, batch), batch)
            rc, rr = segment_sums(token_logps(reference, batch), batch)
        losses.append(float(dpo_loss(PairLogps(pc, pr, rc, rr, *segment_lengths(batch)), beta=0.5).losses[0]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert losses[0] != pytest.approx(losses[2], abs=1e-6)


def _count_pair_attention(monkeypatch, *, enabled: bool) -> dict:
    calls = {"n": 0}
    original = pair_attention.pair_attention_forward

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, pair_attention.NAME, counting)
    if not enabled:
        monkeypatch.setattr(logps, "uses_pair_attention", lambda body, n: False)
    return calls


def test_pair_attention_gives_the_row_mask_gradients(tokenizer, make_rows, monkeypatch):
    pairs, _ = tokenize_rows(make_rows(6, seed=4), tokenizer, max_length=None)
    batch = PackingCollator(tokenizer.pad_token_id, token_budget=70)(pairs)
    grads = {}
    for attention in ("pairs", "row_mask"):
        with monkeypatch.context() as patch:
            calls = _count_pair_attention(patch, enabled=attention == "pairs")
            model = tiny_llama(len(tokenizer), seed=0)
            token_logps(model, batch).sum().backward()
            assert (calls["n"] > 0) == (attention == "pairs")
            grads[attention] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, grad in grads["pairs"].items():
        torch.testing.assert_close(grad, grads["row_mask"][name], atol=1e-5, rtol=1e-4, msg=name)


def test_sliding_window_shorter_than_the_row_keeps_the_row_mask(tokenizer):
    model = tiny_llama(len(tokenizer), seed=0)
    body = model.get_decoder()
    assert pair_attention.uses_pair_attention(body, 100)
    body.config.sliding_window = 50
    assert not pair_attention.uses_pair_attention(body, 100)
    assert pair_attention.uses_pair_attention(body, 50)
