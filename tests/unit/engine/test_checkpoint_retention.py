"""keep_checkpoints: the newest K checkpoint folders stay, older ones go once a new one is in place; the
checkpoint a resume reads, final/ and folders being written are never touched."""

import json

import pytest
import torch

from training.engine.methods import train
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.runtime.checkpoint import STATE_FILE, latest_checkpoint, prune_checkpoints
from training.engine.runtime.config import ConfigError
from training.engine.runtime.loop import TrainResult, _Run
from training.engine.runtime.metrics import read_metrics

FAST = {"warmup_ratio": 0.0, "lr_scheduler": "constant", "max_grad_norm": None, "learning_rate": 1e-3}


@pytest.fixture
def common(tmp_path, make_rows):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in make_rows(16, seed=5)))
    return {
        "model": "tiny",
        "train_file": str(train_file),
        "ref_cache_dir": str(tmp_path / "ref"),
        "batch_size": 4,
        "max_steps": 6,
        "epochs": 2,
        "save_steps": 1,
        **FAST,
    }


def _checkpoints(out):
    found = [p.name for p in out.iterdir() if p.name.startswith("checkpoint-")]
    return sorted(found, key=lambda name: int(name.split("-")[1]))


class Saved:
    def __init__(self):
        self.paths = []

    def log(self, metrics, step):
        pass

    def on_saved(self, path):
        self.paths.append(path.name)


class Steps:
    last = 0

    def log(self, metrics, step):
        self.last = step


def test_two_kept_leaves_the_two_newest_checkpoints_and_final(common, tmp_path):
    saved = Saved()
    result = train(DPOConfig(**common, output_dir=str(tmp_path / "o"), keep_checkpoints=2), callbacks=[saved])
    out = tmp_path / "o"
    assert result.status == "succeeded" and result.step == 6
    assert _checkpoints(out) == ["checkpoint-5", "checkpoint-6"]
    assert (out / "final" / "model.safetensors").is_file()
    assert saved.paths == [f"checkpoint-{n}" for n in range(1, 7)] + ["final"]  # each heard of when written
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no private or half-deleted folder


def test_none_keeps_every_checkpoint(common, tmp_path):
    train(DPOConfig(**common, output_dir=str(tmp_path / "o"), keep_checkpoints=None))
    assert _checkpoints(tmp_path / "o") == [f"checkpoint-{n}" for n in range(1, 7)]


def test_a_run_cut_after_pruning_resumes_from_its_latest_checkpoint_exactly(common, tmp_path):
    full = train(DPOConfig(**common, output_dir=str(tmp_path / "full"), keep_checkpoints=1))
    steps = Steps()
    cut_config = DPOConfig(**common, output_dir=str(tmp_path / "cut"), keep_checkpoints=1)
    cut = train(cut_config, callbacks=[steps], should_cancel=lambda: steps.last >= 4)
    assert cut.status == "cancelled" and cut.step == 4
    assert _checkpoints(tmp_path / "cut") == ["checkpoint-4"]
    resumed = train(cut_config, resume=True)
    assert resumed.status == "succeeded" and resumed.step == 6
    assert _checkpoints(tmp_path / "cut") == ["checkpoint-6"]

    def comparable(path):
        return [{k: v for k, v in r.items() if not k.startswith("throughput/")} for r in read_metrics(path)]

    assert comparable(tmp_path / "full" / "metrics.jsonl") == comparable(tmp_path / "cut" / "metrics.jsonl")
    assert full.eval_metrics == resumed.eval_metrics


def _folder(out, name, *, complete=True):
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w")
    if complete:
        torch.save({"step": 0}, folder / STATE_FILE)
    return folder


def test_pruning_never_touches_a_later_or_incomplete_checkpoint_final_or_a_folder_being_written(tmp_path):
    tmp_path = tmp_path / "run"
    for n in (1, 2, 3, 9):
        _folder(tmp_path, f"checkpoint-{n}")
    _folder(tmp_path, "checkpoint-0", complete=False)  # no trainer_state.pt: not a checkpoint yet
    _folder(tmp_path, "final")
    _folder(tmp_path, ".checkpoint-4.123-abcd.tmp")
    deleted = prune_checkpoints(tmp_path, newest=tmp_path / "checkpoint-3", keep=1)
    assert [p.name for p in deleted] == ["checkpoint-1", "checkpoint-2"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".checkpoint-4.123-abcd.tmp", "checkpoint-0", "checkpoint-3", "checkpoint-9", "final"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-9"
    assert prune_checkpoints(tmp_path, newest=tmp_path / "checkpoint-3", keep=None) == []


class OtherRank:
    """Rank 1 of two: it hands its RNG states to rank 0 and waits; rank 0 writes and prunes."""

    is_main, rank, world_size = False, 1, 2

    def gather_objects(self, value):
        return None

    def barrier(self):
        pass


def test_a_rank_other_than_zero_deletes_no_checkpoint(tmp_path):
    out = tmp_path / "run"
    for n in (1, 2, 3):
        _folder(out, f"checkpoint-{n}")
    config = DPOConfig(model="tiny", train_file="d.jsonl", output_dir=str(out), keep_checkpoints=1)
    recipe = type("Recipe", (), {"save": None, "state_dict": dict})()
    run_ = _Run(recipe, config, out, 4, print, print, lambda: None, TrainResult("succeeded", 3, out, None))
    run_.dist = OtherRank()
    assert run_.checkpoint(4) == out / "checkpoint-4"
    assert _checkpoints(out) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_keep_checkpoints_is_a_config_error_naming_the_field(tmp_path, bad):
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        DPOConfig(model="tiny", train_file="d.jsonl", output_dir=str(tmp_path), keep_checkpoints=bad)
