"""The reward_model recipe (EXRM): the Bradley-Terry objective by hand, packed rewards against the
transformers sequence-classification forward, learning a checkable preference, final/ loading."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import tokenize_rows
from training.engine.lm.models import load_tokenizer
from training.engine.lm.rewards import is_reward_model_folder, load_reward_model, pair_rewards
from training.engine.methods import METHODS, train
from training.engine.objectives.reward import bradley_terry_losses, reward_metrics
from training.engine.recipes.reward_model import RewardModelConfig, RewardModelRecipe
from training.engine.runtime.metrics import read_metrics


def test_bradley_terry_loss_and_metrics_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    losses = bradley_terry_losses(chosen, rejected)
    # −log σ(2), −log σ(−1), −log σ(0)
    expected = torch.tensor([0.126928, 1.313262, 0.693147])
    torch.testing.assert_close(losses, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        bradley_terry_losses(chosen, rejected, torch.tensor([1.0, 0.0, 0.0]))[0], torch.tensor(0.313262)
    )
    metrics = reward_metrics(chosen, rejected, losses.mean(), prefix="eval/")
    assert metrics["eval/accuracy"] == pytest.approx(0.5)  # one win, one loss, one tie (½)
    assert metrics["eval/margin"] == pytest.approx(1 / 3)
    assert metrics["eval/rewards/chosen_max"] == 2.0 and metrics["eval/rewards/rejected_min"] == 0.0
    assert metrics["eval/rewards/chosen_std"] == pytest.approx(float(chosen.std(unbiased=False)))


def test_packed_rewards_equal_the_sequence_classification_forward_of_each_response(make_rows):
    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny")
    model = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    pairs, _ = tokenize_rows(make_rows(6, seed=3), tokenizer, max_length=None)
    collator = PackingCollator(tokenizer.pad_token_id, token_budget=120)  # several rows, several pairs each
    batch = collator(pairs)
    assert len(batch.spans) > 1 and any(len(row) > 1 for row in batch.spans)
    with torch.no_grad():
        chosen, rejected = pair_rewards(model, batch)
        for i, pair in enumerate(pairs):
            for response, packed in ((pair.chosen_ids, chosen[i]), (pair.rejected_ids, rejected[i])):
                ids = torch.tensor([list(pair.prompt_ids) + list(response)])
                plain = model(input_ids=ids).logits[0, 0]
                torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-4)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_reward_model_learns_the_preference_and_its_final_folder_loads(tmp_path, make_rows):
    rows = [{**r, "split": "train"} for r in make_rows(64, seed=5)] + [
        {**r, "split": "test"} for r in make_rows(48, seed=6)
    ]
    config = RewardModelConfig(
        model="tiny",
        train_file=_write(tmp_path / "d.jsonl", rows),
        output_dir=str(tmp_path / "out"),
        learning_rate=1e-3,
        batch_size=8,
        epochs=4,
        eval_steps=16,
        warmup_ratio=0.0,
    )
    result = train(config)
    assert result.status == "succeeded"
    first = read_metrics(tmp_path / "out" / "metrics.jsonl")[0]
    assert {"loss", "accuracy", "margin", "rewards/chosen_mean", "rewards/rejected_std"} <= set(first)
    assert result.eval_metrics["eval/accuracy"] > 0.9  # chosen lower case, rejected upper case
    assert is_reward_model_folder(result.final_model)
    loaded = AutoModelForSequenceClassification.from_pretrained(result.final_model)
    assert loaded.config.num_labels == 1
    assert METHODS["reward_model"].accepts == ("pairwise", "ranking")


def test_the_margin_from_judged_strength_enters_the_loss_of_each_pair(tmp_path, make_rows):
    rows = make_rows(6, seed=2)
    for i, row in enumerate(rows):
        if i % 3:
            row["strength"] = float(i % 3 + 1)  # rows 0 and 3 have none (imported votes): no margin
    config = RewardModelConfig(
        model="tiny",
        train_file=_write(tmp_path / "rows.jsonl", rows),
        output_dir=str(tmp_path / "out"),
        batch_size=6,
        margin_per_strength=0.5,
    )
    torch.manual_seed(0)
    recipe = RewardModelRecipe(config)
    recipe.setup(torch.device("cpu"))
    positions = list(range(6))
    with torch.no_grad():
        chosen, rejected, _ = recipe.rewards([recipe.train_pairs[i] for i in positions])
    margins = torch.tensor([0.5 * rows[p.index].get("strength", 0.0) for p in recipe.train_pairs])
    assert margins.tolist() == [0.0, 1.0, 1.5, 0.0, 1.0, 1.5]
    expected = -torch.nn.functional.logsigmoid(chosen - rejected - margins).mean()
    out = recipe.micro_step(positions, scale=1.0)
    assert out.metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    plain = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    assert abs(float(expected) - float(plain)) > 1e-3  # the margin really changed the loss
