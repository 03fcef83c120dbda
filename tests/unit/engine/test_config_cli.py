"""Config validation, round trip through dicts, and the command line."""

import json

import pytest
import yaml

from training.engine.__main__ import main
from training.engine.methods import METHODS, ConfigError, config_from_dict, config_to_dict
from training.engine.recipes.dpo_configs import RDPOConfig
from training.engine.runtime.metrics import read_metrics

BASE = {"model": "tiny", "train_file": "d.jsonl", "output_dir": "out"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp16"}, "precision"),
        ({"lr_scheduler": "step"}, "lr_scheduler"),
        ({"model": "nothing-here"}, "model"),
        ({"train_file": "d.csv"}, "train_file"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"method": "rdpo", "epsilon": 0.5}, "epsilon"),
        ({"method": "ipo", "tau": 0}, "tau"),
        ({"bogus": 1}, "bogus"),
        ({"method": "nope"}, "method"),
        ({"extra_losses": [{"name": "sft", "weight": "x"}]}, "extra_losses"),
    ],
)
def test_every_bad_field_is_named(changes, field):
    with pytest.raises((ConfigError, ValueError), match=field):
        config_from_dict({**BASE, **changes})


def test_config_round_trips_through_a_dict():
    config = RDPOConfig(**BASE, epsilon=0.2, extra_losses=({"name": "sft", "weight": 0.1},))
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(data) == config
    assert [t.name for t in config.objective_terms()] == ["rdpo", "sft"]


REQUIRED = {"ppo": {"reward_model": "tiny"}, "rto": {"reward_model": "tiny", "dpo_model": "tiny"}}
"""The methods with a required field beyond BASE (the models they train against)."""


def test_every_method_builds_with_defaults():
    for name, method in METHODS.items():
        config = method.config(**BASE, **REQUIRED.get(name, {}))
        assert config.method == name
        if hasattr(config, "objective_terms"):  # the causal-LM preference methods
            assert config.objective_terms()
        assert method.accepts and set(method.accepts) <= set(method.recipe.accepts)


def test_cream_is_a_dpo_recipe_method_with_the_cream_term_at_beta_point_one():
    config = config_from_dict({**BASE, "method": "cream"})
    assert [(t.name, t.weight, dict(t.params)) for t in config.objective_terms()] == [
        ("cream", 1.0, {"beta": 0.1})
    ]
    assert METHODS["cream"].recipe is METHODS["dpo"].recipe
    assert METHODS["cream"].accepts == METHODS["dpo"].accepts


def test_cli_trains_writes_metrics_and_resumes(tmp_path, make_rows, capsys):
    data = tmp_path / "d.jsonl"
    rows = make_rows(24, seed=2)
    for i, row in enumerate(rows):
        row["split"] = "test" if i < 8 else "train"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        **BASE,
        "train_file": str(data),
        "output_dir": str(tmp_path / "out"),
        "ref_cache_dir": str(tmp_path / "ref"),
        "learning_rate": 1e-3,
        "max_steps": 2,
        "batch_size": 4,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "succeeded after 2 steps" in out and f"final model: {tmp_path / 'out' / 'final'}" in out
    assert (tmp_path / "out" / "final" / "config.json").is_file()  # what the docstring promises
    metrics = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
    assert any("eval/rewards/accuracies" in m for m in metrics)
    assert main(["train", str(path), "--resume", "--no-progress"]) == 0  # already complete: nothing to do
    path.write_text(yaml.safe_dump({**cfg, "beta": -1}))
    assert main(["train", str(path)]) == 2
    assert "beta" in capsys.readouterr().err
