"""More than one process: ``torchrun --standalone --nproc-per-node 2 -m training.engine train CONFIG.yaml``
with the same config file as a one-process run (Gloo on CPU) repeats that run: the same per-step loss to
1e-5, each step written once (by rank 0), the same final weights; a resume under two processes continues
the metrics; a recipe that cannot run on two processes fails with its reason, not a hang."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import tokenize_rows
from training.engine.lm.models import load_model, load_tokenizer
from training.engine.lm.refcache import compute_reference
from training.engine.runtime.config import RunConfig
from training.engine.runtime.distributed import Dist, DistributedError, leave_process_group
from training.engine.runtime.loop import fsdp_units, prepare, run
from training.engine.runtime.metrics import read_metrics
from training.engine.runtime.optim import step_plan
from training.engine.runtime.recipe import MicroStep, RecipeBase, Stage

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


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, make_rows):
    folder = tmp_path_factory.mktemp("distributed")
    rows = make_rows(40, seed=5)
    for i, row in enumerate(rows):
        row["split"] = "test" if i < 8 else "train"
    data = folder / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "method": "dpo",
        "model": "tiny",
        "train_file": str(data),
        "output_dir": "run",  # relative: each run writes in its own working directory
        "ref_cache_dir": str(folder / "ref"),
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
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def one_process(config_file) -> Path:
    """The one-process run every multi-process run is compared with (its ``output_dir``)."""
    out = _engine(config_file.parent / "one", config_file)
    assert out.returncode == 0, out.stderr[-3000:]
    return config_file.parent / "one" / "run"


@pytest.fixture(scope="module")
def two_processes(config_file):
    """The same config on two processes (DDP): its ``output_dir`` and the launch's output."""
    out = _engine(config_file.parent / "two", config_file, processes=2)
    assert out.returncode == 0, out.stderr[-3000:]
    return config_file.parent / "two" / "run", out


def _losses(run: Path) -> dict[int, dict]:
    lines = read_metrics(run / "metrics.jsonl")
    steps = [m["step"] for m in lines if "loss" in m]
    assert len(steps) == len(set(steps)), f"a step written twice: {steps}"
    return {m["step"]: m for m in lines if "loss" in m}


def test_two_processes_repeat_the_one_process_run(one_process, two_processes):
    run, two = two_processes
    assert two.stdout.count("succeeded after 4 steps") == 1  # rank 0 reports, rank 1 keeps quiet

    single, double = _losses(one_process), _losses(run)
    assert sorted(single) == sorted(double) == [1, 2, 3, 4]
    for step in single:
        assert double[step]["dist/world_size"] == 2 and single[step]["dist/world_size"] == 1
        for name in ("loss", "rewards/margins", "rewards/accuracies", "grad_norm"):
            assert double[step][name] == pytest.approx(single[step][name], abs=1e-5), (step, name)
    evals = [m for m in read_metrics(run / "metrics.jsonl") if "eval/loss" in m]
    assert [m["step"] for m in evals] == [2, 4]

    a = load_file(one_process / "final" / "model.safetensors")
    b = load_file(run / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)


def _resumed_from(checkpoint: Path, cwd: Path, config: Path, processes: int, *, metrics: Path | None = None):
    """A run in ``cwd`` resumed from a copy of ``checkpoint`` (as if killed after it, with the metrics a
    killed run would have left), on ``processes`` processes; its steps' metrics."""
    run = cwd / "run"
    run.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(checkpoint), str(run)], check=True)
    if metrics is not None:
        (run / "metrics.jsonl").write_text(metrics.read_text())
    again = _engine(cwd, config, "--resume", processes=processes)
    assert again.returncode == 0, again.stderr[-3000:]
    return _losses(run)


def test_a_two_process_run_resumes_from_its_checkpoint_with_continuous_metrics(
    tmp_path, config_file, two_processes
):
    run, _ = two_processes
    uninterrupted = _losses(run)
    kept = [m for m in read_metrics(run / "metrics.jsonl") if m["step"] <= 3]
    (tmp_path / "left.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))
    resumed = _resumed_from(run / "checkpoint-2", tmp_path, config_file, 2, metrics=tmp_path / "left.jsonl")
    assert sorted(resumed) == [1, 2, 3, 4]  # step 3, written before the kill, is replaced once
    for step in (3, 4):
        assert resumed[step]["loss"] == pytest.approx(uninterrupted[step]["loss"], abs=1e-6)


def _one_and_two(tmp_path: Path, name: str, config: dict) -> dict[int, dict[int, dict]]:
    """``config`` run on one process (in ``p1/``) and on two (``p2/``): each run's steps' metrics."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = {}
    for processes in (1, 2):
        out = _engine(tmp_path / f"p{processes}", path, processes=processes)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[processes] = _losses(tmp_path / f"p{processes}" / "run")
    return runs


def test_curry_dpo_on_two_processes_repeats_its_stages_and_their_reference_passes(tmp_path, config_file):
    """Each stage after the first takes its reference from the model trained so far: the ranks compute
    that pass together and must train on the same values as one process."""
    pairs = Path(yaml.safe_load(config_file.read_text())["train_file"]).read_text().splitlines()
    rows = [json.loads(line) for line in pairs]
    ranked = [
        {
            "prompt": row["prompt"],
            "responses": [row["chosen"], row["rejected"], row["rejected"] + " " + row["chosen"].upper()],
            "ratings": [3, 1, 2],
            "split": row["split"],
        }
        for row in rows[:24]
    ]
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ranked))
    config = {
        **yaml.safe_load(config_file.read_text()),
        "method": "curry_dpo",
        "train_file": str(data),
        "ref_cache_dir": str(tmp_path / "ref"),
        "n_stages": 2,
    }
    del config["max_steps"]  # the curriculum's own plan: every stage to its end
    runs = _one_and_two(tmp_path, "curry", config)
    assert sorted(runs[1]) == sorted(runs[2]) and len(runs[1]) >= 4
    assert {m["curriculum/stage"] for m in runs[1].values()} == {0.0, 1.0}
    for step, single in runs[1].items():
        for name in ("loss", "rewards/margins", "curriculum/stage", "curriculum/gap", "grad_norm"):
            assert runs[2][step][name] == pytest.approx(single[name], abs=1e-5), (step, name)


def test_diffusion_dpo_on_two_processes_repeats_the_run_and_shares_the_encoding(tmp_path):
    """Each micro-batch's noise and timesteps are drawn for the whole micro-batch on every rank (each
    takes its share's), so two processes train as one; the ranks encode a share of the images each."""
    from training.engine.diffusion.tiny import save_tiny_sd, write_synthetic_pairs

    model = save_tiny_sd(tmp_path / "sd")
    config = {
        "method": "diffusion_dpo",
        "model": f"local:{model}",
        "train_file": str(write_synthetic_pairs(tmp_path / "pairs.zip", 9, n_test=3)),
        "output_dir": "run",
        "batch_size": 3,  # shards of 1 and 2
        # β/2 multiplies differences of errors: with the default 5000, the ~1e-6 by which a convolution
        # over 1 or 2 images rounds differently from one over 3 moves the loss by ~1e-4
        "beta": 20.0,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-4,
        "warmup_ratio": 0.0,
        "eval_steps": 2,
        "sample_steps": 2,
        "sample_count": 1,
        "device": "cpu",
        "seed": 4,
    }
    runs, caches = {}, {}
    for processes in (1, 2):
        cache = tmp_path / f"cache{processes}"
        path = tmp_path / f"diffusion{processes}.yaml"
        path.write_text(yaml.safe_dump({**config, "encode_cache_dir": str(cache)}))
        out = _engine(tmp_path / f"p{processes}", path, processes=processes)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[processes] = _losses(tmp_path / f"p{processes}" / "run")
        caches[processes] = {f.name: load_file(f) for f in cache.glob("*.safetensors")}
    assert caches[2].keys() == caches[1].keys() and len(caches[1]) == 4  # latents and text, train and eval
    for file, values in caches[1].items():
        for name, tensor in values.items():
            torch.testing.assert_close(caches[2][file][name], tensor, atol=1e-5, rtol=1e-4)
    assert sorted(runs[1]) == sorted(runs[2]) == [1, 2]  # 9 pairs in micro-batches of 3, 2 per step
    for step, single in runs[1].items():
        for name in ("loss", "implicit_acc", "mse/winner", "mse/loser", "grad_norm"):
            # rel: a convolution's weight gradient sums over the rank's 1 or 2 examples, not the 3, in
            # another order (float32 rounding, ~3e-6 of a gradient norm of ~4)
            assert runs[2][step][name] == pytest.approx(single[name], rel=1e-5, abs=1e-5), (step, name)
    a, b = (
        load_file(tmp_path / f"p{n}" / "run" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
        for n in (1, 2)
    )
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["ppo", "rto"])
def test_ppo_and_rto_on_two_processes_repeat_the_one_process_run(tmp_path, method):
    """Every rank samples and scores the whole rollout batch (the same seeded draws); the updates are
    sharded, each rank's token-mean losses reweighted to its part of the micro-batch's token mean."""
    from training.engine.methods import train
    from training.engine.recipes.dpo_configs import DPOConfig
    from training.engine.recipes.reward_model import RewardModelConfig
    from training.engine.rlhf_reproduction import property_rows, write_rows

    data = write_rows(
        tmp_path / "pairs.jsonl", property_rows(16, seed=0) + property_rows(4, seed=9, split="test")
    )
    reward = train(
        RewardModelConfig(model="tiny", train_file=data, output_dir=str(tmp_path / "rm"), batch_size=8)
    )
    config = {
        "method": method,
        "model": "tiny",
        "reward_model": f"local:{reward.final_model}",
        "train_file": str(data),
        "output_dir": "run",
        "batch_size": 3,  # shards of 1 and 2, with responses of different lengths
        "num_mini_batches": 2,
        "num_ppo_epochs": 2,
        "max_new_tokens": 24,  # ~1% EOS a token (a vocab of ~100): responses of different lengths
        "temperature": 1.5,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "max_steps": 6,  # two rollout batches: the second sampled from the updated policy
        "eval_steps": 6,
        "device": "cpu",
        "seed": 2,
    }
    if method == "rto":
        dpo = train(DPOConfig(model="tiny", train_file=data, output_dir=str(tmp_path / "dpo"), max_steps=2))
        config.update(dpo_model=f"local:{dpo.final_model}", dpo_reference="tiny")
    runs = _one_and_two(tmp_path, method, config)
    assert sorted(runs[1]) == sorted(runs[2]) == [1, 2, 3, 4, 5, 6]
    assert any(m["val/num_eos_tokens"] > 0 for m in runs[1].values())  # shards differ in response tokens
    names = ("loss", "loss/policy_avg", "loss/value_avg", "policy/approxkl_avg", "val/ratio", "grad_norm")
    for step, single in runs[1].items():
        for name in (*names, "objective/scores", "objective/kl", "ppo/iteration"):
            assert runs[2][step][name] == pytest.approx(single[name], rel=1e-5, abs=1e-5), (step, name)
    a = load_file(tmp_path / "p1" / "run" / "final" / "model.safetensors")
    b = load_file(tmp_path / "p2" / "run" / "final" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)


def test_fast_slow_dpo_on_two_processes_repeats_the_one_process_run(tmp_path, config_file):
    """The chase term |ℓ_fast − ℓ_slow| is not a mean over examples: the ranks agree on the sign of the
    whole micro-batch's difference, so two processes train as one (the role swaps follow the reduced
    losses, the same on every rank)."""
    config = {**yaml.safe_load(config_file.read_text()), "method": "fast_slow_dpo", "lora": True}
    config.update(ref_cache_dir=str(tmp_path / "ref"), chase_weight=0.5, max_steps=6, epochs=2)
    config.update(fast_lr_ratio=1.0)  # two near-equal adapters: their loss gap changes sign from pair to pair
    runs = _one_and_two(tmp_path, "fast_slow", config)
    assert sorted(runs[1]) == sorted(runs[2]) == [1, 2, 3, 4, 5, 6]
    for step, single in runs[1].items():
        for name in ("loss", "fast/loss", "slow/loss", "rewards/margins", "grad_norm", "fast_slow/swaps"):
            assert runs[2][step][name] == pytest.approx(single[name], abs=1e-5), (step, name)


def test_a_recipe_that_cannot_run_on_two_processes_says_so(tmp_path, config_file):
    class OneProcessOnly(_NoisyRecipe):
        supports_distributed = False

    config = RunConfig(model="tiny", train_file="unread.jsonl", output_dir=str(tmp_path), device="cpu")
    with pytest.raises(DistributedError, match="does not run on more than one process yet"):
        prepare(OneProcessOnly(4, config), config, Dist(rank=0, world_size=2))


def test_fsdp_with_the_whole_model_as_one_unit_repeats_the_one_process_run(
    tmp_path, config_file, one_process
):
    from training.engine.methods import config_from_dict
    from training.engine.recipes.dpo import DPORecipe

    settings = {k: v for k, v in yaml.safe_load(config_file.read_text()).items() if k != "method"}
    recipe = DPORecipe(config_from_dict({"method": "dpo", **settings}))
    recipe.model = load_model("tiny")
    for wrap, units in (("layer", 2), ("model", 0)):  # the tiny Llama's two decoder layers, or none
        config = config_from_dict({"method": "dpo", **settings, "fsdp_wrap": wrap})
        root, layers = fsdp_units(recipe, config)
        assert root is recipe.model and len(layers) == units, wrap
    path = _with(config_file, "fsdp-model.yaml", strategy="fsdp", fsdp_wrap="model", fsdp_sharding="grad_op")
    out = _engine(tmp_path / "two", path, processes=2)
    assert out.returncode == 0, out.stderr[-3000:]
    single, sharded = _losses(one_process), _losses(tmp_path / "two" / "run")
    assert 0.45 < sharded[1]["dist/weights_held"] < 0.55
    for step in single:
        for name in ("loss", "rewards/margins", "grad_norm"):
            assert sharded[step][name] == pytest.approx(single[step][name], abs=1e-5), (step, name)


def test_a_bf16_fsdp_run_gathers_its_weights_in_bf16_and_keeps_float32_masters(tmp_path, config_file):
    """precision bf16 under FSDP: each unit gathers bf16 weights (MixedPrecisionPolicy), reduces its
    gradients and keeps its shards in float32; it trains as a one-process bf16 (autocast) run does, to
    bf16's precision."""
    runs = {}
    for processes, strategy in ((1, "ddp"), (2, "fsdp")):
        path = _with(config_file, f"bf16-{strategy}.yaml", precision="bf16", strategy=strategy, max_steps=2)
        out = _engine(tmp_path / strategy, path, processes=processes)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[strategy] = _losses(tmp_path / strategy / "run")
    assert runs["fsdp"][1]["dist/gathered_bits"] == 16
    for step in (1, 2):
        # measured: loss 5e-5 apart, grad norm 5e-4 relative (RMSNorm's weights are gathered in bf16 too,
        # where autocast keeps them in float32)
        assert runs["fsdp"][step]["loss"] == pytest.approx(runs["ddp"][step]["loss"], abs=1e-3), step
        assert runs["fsdp"][step]["grad_norm"] == pytest.approx(runs["ddp"][step]["grad_norm"], rel=1e-2)
    weights = load_file(tmp_path / "fsdp" / "run" / "checkpoint-2" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_a_world_of_one_shards_nothing():
    dist = Dist()
    assert dist.shard([4, 5, 6]) == [4, 5, 6] and dist.agree(True) and not dist.active
    assert [Dist(rank=r, world_size=2).shard([1, 2, 3, 4, 5]) for r in (0, 1)] == [[1, 2], [3, 4, 5]]
    means, examples, tokens = dist.weighted_means({"loss": 3.0}, 2, 7)
    assert means == {"loss": 1.5} and examples == 2 and tokens == 7


def _with(config_file: Path, name: str, *, drop: tuple[str, ...] = (), **changes) -> Path:
    config = {k: v for k, v in yaml.safe_load(config_file.read_text()).items() if k not in drop}
    config.update(changes)
    path = config_file.with_name(name)  # beside the data: a module's configs share one folder
    path.write_text(yaml.safe_dump(config))
    return path


def test_fsdp_on_two_processes_repeats_the_one_process_run_and_its_checkpoint_resumes_anywhere(
    tmp_path, config_file, one_process
):
    """Sharded (a unit per decoder layer, ZeRO-3), two processes train as one does: each step's loss and
    gradient norm to 1e-5 (the reduce-scatter sums the ranks' gradients in another order than one
    process accumulates them: float32 rounding, ~1e-7 relative), the final weights to 1e-5.  Its
    checkpoint holds the full weights and optimizer state, so it resumes under FSDP and under one process
    alike, continuing the uninterrupted run's losses."""
    fsdp = _with(config_file, "fsdp.yaml", strategy="fsdp")
    two = _engine(tmp_path / "two", fsdp, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    single, sharded = _losses(one_process), _losses(tmp_path / "two" / "run")
    assert sorted(sharded) == [1, 2, 3, 4]
    assert single[1]["dist/weights_held"] == 1.0
    assert 0.45 < sharded[1]["dist/weights_held"] < 0.55  # rank 0 holds about half of every unit
    assert sharded[1]["dist/gathered_bits"] == 32 and "dist/gathered_bits" not in single[1]
    for step in single:
        for name in ("loss", "rewards/margins", "grad_norm"):
            assert sharded[step][name] == pytest.approx(single[step][name], abs=1e-5), (step, name)
    a = load_file(one_process / "final" / "model.safetensors")
    b = load_file(tmp_path / "two" / "run" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)

    checkpoint = tmp_path / "two" / "run" / "checkpoint-2"
    for where, config, processes in (("again-fsdp", fsdp, 2), ("again-one", config_file, 1)):
        resumed = _resumed_from(checkpoint, tmp_path / where, config, processes)
        assert sorted(resumed) == [3, 4], where
        for step in (3, 4):
            for name in ("loss", "learning_rate", "grad_norm"):  # the schedule resumes with the optimizer
                assert resumed[step][name] == pytest.approx(sharded[step][name], abs=1e-5), (
                    where,
                    step,
                    name,
                )


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reference_on_rank(rank: int, port: int, rows: list[dict], out: str) -> None:
    """One of two processes computing the reference log-probs together, counting the pairs it ran."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist = Dist.from_env()
    tokenizer = load_tokenizer("tiny")
    pairs, _ = tokenize_rows(rows, tokenizer, max_length=128)
    collator = PackingCollator(tokenizer.pad_token_id, 4096, torch.device("cpu"))
    counted = []
    counting = lambda batch: counted.append(len(batch)) or collator(batch)  # noqa: E731
    values = compute_reference(load_model("tiny"), pairs, counting, batch_size=4, dist=dist)
    torch.save({"values": values, "computed": sum(counted)}, f"{out}/rank{rank}.pt")
    leave_process_group(synchronise=True)


def test_two_processes_share_the_reference_pass_and_both_get_all_of_it(tmp_path, make_rows):
    rows = make_rows(22, seed=2)  # 6 batches of 4 (the last of 2): 3 for each rank
    tokenizer = load_tokenizer("tiny")
    pairs, _ = tokenize_rows(rows, tokenizer, max_length=128)
    collator = PackingCollator(tokenizer.pad_token_id, 4096, torch.device("cpu"))
    alone = compute_reference(load_model("tiny"), pairs, collator, batch_size=4)
    port = _free_port()
    torch.multiprocessing.spawn(_reference_on_rank, args=(port, rows, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["computed"] for r in ranks] == [12, 10]  # a share each, not everything on rank 0
    for rank in ranks:
        for side in ("chosen", "rejected"):
            torch.testing.assert_close(rank["values"][side], alone[side], atol=1e-5, rtol=1e-5)


class _NoisyRecipe(RecipeBase):
    """One weight fitted to uniform noise drawn per example: each rank draws as many numbers as its shard
    holds, so with uneven shards the ranks' random streams part after the first step."""

    supports_distributed = True

    def __init__(self, n: int, config: RunConfig) -> None:
        self.n, self.config = n, config

    def setup(self, device) -> None:
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def param_groups(self):
        return [{"params": [self.weight]}]

    def stages(self):
        return [Stage(step_plan(self.n, self.config), self.n)]

    def micro_step(self, positions, *, scale):
        loss = ((self.weight - torch.rand(len(positions))) ** 2).mean()
        (loss * scale).backward()
        return MicroStep({"loss": loss.item()}, len(positions))

    def evaluate(self):
        return {}

    def save(self, folder) -> None:
        torch.save(self.weight.detach(), folder / "weight.pt")

    def load(self, folder) -> None:
        self.weight.data.copy_(torch.load(folder / "weight.pt"))


def _noisy_on_rank(rank: int, port: int, out: str) -> None:
    """Two processes: four steps saving at 2, then a run resumed from that checkpoint in another folder."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist = Dist.from_env()
    common = {"model": "-", "train_file": "-", "batch_size": 5, "max_steps": 4, "save_steps": 2}
    common["save_final"] = False
    losses = {}
    for name, resume in (("whole", False), ("resumed", True)):
        config = RunConfig(**common, output_dir=f"{out}/{name}", learning_rate=0.1, warmup_ratio=0.0)
        if resume and dist.is_main:
            subprocess.run(["cp", "-r", f"{out}/whole/checkpoint-2", f"{out}/resumed/"], check=True)
        dist.barrier()
        recipe = prepare(_NoisyRecipe(40, config), config, dist)
        run(recipe, config, resume=resume, dist=dist)
        losses[name] = {m["step"]: m["loss"] for m in read_metrics(Path(out) / name / "metrics.jsonl")}
    if dist.is_main:
        torch.save(losses, f"{out}/losses.pt")
    leave_process_group(synchronise=True)


def test_each_rank_resumes_its_own_random_streams(tmp_path):
    (tmp_path / "resumed").mkdir()
    torch.multiprocessing.spawn(_noisy_on_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    losses = torch.load(tmp_path / "losses.pt")
    assert sorted(losses["resumed"]) == [3, 4]
    for step in (3, 4):  # rank 1 drew 3 numbers a step, rank 0 two: rank 0's streams would not do for both
        assert losses["resumed"][step] == pytest.approx(losses["whole"][step], abs=1e-7), step
