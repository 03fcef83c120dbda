"""More than one process: ``torchrun --standalone --nproc-per-node 2 -m training.engine train CONFIG.yaml``
with the same config file as a one-process run (Gloo on CPU) repeats that run: the same per-step loss to
1e-5, each step written once (by rank 0), the same final weights; a resume under two processes continues
the metrics; a recipe that cannot run on two processes fails with its reason, not a hang."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training.engine.runtime.distributed import Dist
from training.engine.runtime.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]


def _engine(cwd: Path, config: Path, *extra: str, processes: int = 1, timeout: int = 300):
    """Run the engine's command line in ``cwd`` (the config's ``output_dir`` is relative to it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "training.engine", "train", str(config), "--no-progress", *extra]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc-per-node={processes}", *command[1:]]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def config_file(tmp_path, make_rows):
    rows = make_rows(40, seed=5)
    for i, row in enumerate(rows):
        row["split"] = "test" if i < 8 else "train"
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "method": "dpo",
        "model": "tiny",
        "train_file": str(data),
        "output_dir": "run",  # relative: each run writes in its own working directory
        "ref_cache_dir": str(tmp_path / "ref"),
        "batch_size": 5,  # odd on purpose: the two ranks' shards differ in size
        "gradient_accumulation_steps": 2,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "save_steps": 2,
        "eval_steps": 2,
        "device": "cpu",
        "seed": 3,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _losses(run: Path) -> dict[int, dict]:
    lines = read_metrics(run / "metrics.jsonl")
    steps = [m["step"] for m in lines if "loss" in m]
    assert len(steps) == len(set(steps)), f"a step written twice: {steps}"
    return {m["step"]: m for m in lines if "loss" in m}


def test_two_processes_repeat_the_one_process_run(tmp_path, config_file):
    one = _engine(tmp_path / "one", config_file)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _engine(tmp_path / "two", config_file, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("succeeded after 4 steps") == 1  # rank 0 reports, rank 1 keeps quiet

    single, double = _losses(tmp_path / "one" / "run"), _losses(tmp_path / "two" / "run")
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step]["dist/world_size"] == 2 and single[step]["dist/world_size"] == 1
        for name in ("loss", "rewards/margins", "rewards/accuracies", "grad_norm"):
            assert double[step][name] == pytest.approx(single[step][name], abs=1e-5), (step, name)
    evals = [m for m in read_metrics(tmp_path / "two" / "run" / "metrics.jsonl") if "eval/loss" in m]
    assert [m["step"] for m in evals] == [2, 4]

    a = load_file(tmp_path / "one" / "run" / "final" / "model.safetensors")
    b = load_file(tmp_path / "two" / "run" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)


def test_a_two_process_run_resumes_from_its_checkpoint_with_continuous_metrics(tmp_path, config_file):
    run = tmp_path / "part" / "run"
    first = _engine(tmp_path / "part", config_file, processes=2)
    assert first.returncode == 0, first.stderr[-3000:]
    uninterrupted = _losses(run)
    # as if killed after the checkpoint at step 2: drop what such a run would not have written
    for folder in ("checkpoint-4", "final"):
        subprocess.run(["rm", "-rf", str(run / folder)], check=True)
    kept = [m for m in read_metrics(run / "metrics.jsonl") if m["step"] <= 3]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))
    again = _engine(tmp_path / "part", config_file, "--resume", processes=2)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = _losses(run)
    assert sorted(resumed) == [1, 2, 3, 4]  # step 3, written before the kill, is replaced once
    for step in (3, 4):
        assert resumed[step]["loss"] == pytest.approx(uninterrupted[step]["loss"], abs=1e-6)


def test_a_recipe_that_cannot_run_on_two_processes_says_so(tmp_path, config_file):
    config = yaml.safe_load(config_file.read_text())
    config.update(method="fast_slow_dpo", lora=True)
    path = tmp_path / "fast_slow.yaml"
    path.write_text(yaml.safe_dump(config))
    out = _engine(tmp_path / "fs", path, processes=2, timeout=180)
    assert out.returncode != 0
    assert "fast_slow_dpo does not run on more than one process yet" in out.stderr


def test_a_world_of_one_shards_nothing():
    dist = Dist()
    assert dist.shard([4, 5, 6]) == [4, 5, 6] and dist.agree(True) and not dist.active
    assert [Dist(rank=r, world_size=2).shard([1, 2, 3, 4, 5]) for r in (0, 1)] == [[1, 2], [3, 4, 5]]
    means, examples, tokens = dist.weighted_means({"loss": 3.0}, 2, 7)
    assert means == {"loss": 1.5} and examples == 2 and tokens == 7


def _with(config_file: Path, name: str, *, drop: tuple[str, ...] = (), **changes) -> Path:
    config = {k: v for k, v in yaml.safe_load(config_file.read_text()).items() if k not in drop}
    config.update(changes)
    path = config_file.with_name(name)
    path.write_text(yaml.safe_dump(config))
    return path


def test_fsdp_on_two_processes_repeats_the_one_process_run_and_its_checkpoint_resumes_anywhere(
    tmp_path, config_file
):
    """Sharded (a unit per decoder layer, ZeRO-3), two processes train as one does: each step's loss and
    gradient norm to 1e-5 (the reduce-scatter sums the ranks' gradients in another order than one
    process accumulates them: float32 rounding, ~1e-7 relative), the final weights to 1e-5.  Its
    checkpoint holds the full weights and optimizer state, so it resumes under FSDP and under one process
    alike, continuing the uninterrupted run's losses."""
    fsdp = _with(config_file, "fsdp.yaml", strategy="fsdp")
    one = _engine(tmp_path / "one", config_file)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _engine(tmp_path / "two", fsdp, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    single, sharded = _losses(tmp_path / "one" / "run"), _losses(tmp_path / "two" / "run")
    assert sorted(sharded) == [1, 2, 3, 4]
    assert single[1]["dist/weights_held"] == 1.0
    assert 0.45 < sharded[1]["dist/weights_held"] < 0.55  # rank 0 holds about half of every unit
    for step in single:
        for name in ("loss", "rewards/margins", "grad_norm"):
            assert sharded[step][name] == pytest.approx(single[step][name], abs=1e-5), (step, name)
    a = load_file(tmp_path / "one" / "run" / "final" / "model.safetensors")
    b = load_file(tmp_path / "two" / "run" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)

    for where, config, processes in (("again-fsdp", fsdp, 2), ("again-one", config_file, 1)):
        run = tmp_path / where / "run"
        run.mkdir(parents=True)
        subprocess.run(["cp", "-r", str(tmp_path / "two" / "run" / "checkpoint-2"), str(run)], check=True)
        again = _engine(tmp_path / where, config, "--resume", processes=processes)
        assert again.returncode == 0, again.stderr[-3000:]
        resumed = _losses(run)
        assert sorted(resumed) == [3, 4], where
        for step in (3, 4):
            assert resumed[step]["loss"] == pytest.approx(sharded[step]["loss"], abs=1e-5), (where, step)


def test_a_reward_model_shards_with_fsdp_and_trains_as_one_process_does(tmp_path, config_file):
    changes = {"method": "reward_model", "max_steps": 2, "save_steps": None, "drop": ("ref_cache_dir",)}
    plain = _with(config_file, "rm.yaml", **changes)
    one = _engine(tmp_path / "one", plain)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _engine(
        tmp_path / "two", _with(config_file, "rm-fsdp.yaml", **changes, strategy="fsdp"), processes=2
    )
    assert two.returncode == 0, two.stderr[-3000:]
    single, sharded = _losses(tmp_path / "one" / "run"), _losses(tmp_path / "two" / "run")
    assert sharded[1]["dist/weights_held"] < 0.55
    for step in (1, 2):
        for name in ("loss", "accuracy", "margin", "grad_norm"):
            assert sharded[step][name] == pytest.approx(single[step][name], abs=1e-5), (step, name)
