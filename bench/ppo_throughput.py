"""PPO throughput: our ppo recipe against TRL's PPOTrainer (TRL 1.12, its last release with PPO), same work.

Policy and reference: bundled SmolLM2-135M-Instruct; reward model and value model: one seeded one-label
sequence-classification head on the same body, built once here and loaded by both sides (the value model
starts as a copy of it on both).  16 seeded 12-word prompts of one templated length (42 tokens, the same
ids on both sides: TRL shuffles its prompts, ours takes them in order, so equal lengths keep the work per
rollout the same), rollout batch 8 (one mini-batch, no accumulation), 2 PPO epochs per rollout, 3 rollouts,
24 sampled tokens per response at temperature 0.7, top-p 1, every response the full 24 (ours
``stop_at_eos=False``, TRL ``stop_token=None``), kl_coef 0.05, cliprange 0.2 / 0.2, vf_coef 0.1, γ 1, λ 0.95,
lr 3e-6 constant, AdamW (fused on both), no gradient clipping (TRL's PPO has none), fp32, SDPA attention,
no gradient checkpointing, no eval, no sample printing, no saving; CPU, the same torch thread count and
allocator setting in both children.  TRL runs in its own environment (``bench/.venv-trl-ppo``), built here
on first use.  ``ours_torch_linear`` runs ours with torch's own ``F.linear`` (MKL, as TRL has it).

A PPO step is one rollout (sampling, the policy, reference, value and reward passes, KL rewards, GAE) plus
its ``num_ppo_epochs × num_mini_batches`` optimizer steps.  Steps are timed from the run's start hook
(``on_start`` / ``on_train_begin``, after loading) to each step's end (ours: its last logged optimizer step;
TRL: ``on_step_end``); the rollout share is ours' ``time/rollout_s`` and, on TRL, the time to its first PPO
forward (``bench/_ppo_trl_side.py`` says how, and times TRL's sampling alone: "(sample)"); update = step −
rollout.  Setup (loading the models, building the optimizer) is reported apart.  Other processes on the
machine stretch every number: the header prints the load average.
``python bench/ppo_throughput.py [--prompts N --steps S --runs ours,trl,ours_torch_linear]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _engine_common import WORDS, peak_rss_mb  # noqa: E402

SEED, PROMPT_WORDS = 42, 12
SIZES = {"batch": 8, "num_mini_batches": 1, "num_ppo_epochs": 2, "max_new_tokens": 24}
PPO = {
    "temperature": 0.7,
    "kl_coef": 0.05,
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "gamma": 1.0,
    "lam": 0.95,
    "learning_rate": 3e-6,
}
DEFAULT_RUNS = "ours,trl"
TRL_ENV = ROOT / "bench" / ".venv-trl-ppo"
TRL_PINS = ("torch==2.13.0", "trl==1.12.0", "transformers==5.23.0", "accelerate==1.15.0", "datasets==5.2.0")
"""TRL 1.12.0 is the newest release with a PPO trainer (1.13 removed ``trl.experimental.ppo``); the rest are
the project's own versions."""


def trl_python() -> Path:
    """The TRL environment's interpreter, building the environment once (pip from PyPI) when missing."""
    python, stamp = TRL_ENV / "bin" / "python", TRL_ENV / ".installed-ppo-bench"
    pins = "\n".join(TRL_PINS) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == pins:
        return python
    print(f"Building {TRL_ENV.relative_to(ROOT)} (once): {' '.join(TRL_PINS)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_ENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *TRL_PINS], check=True)
    stamp.write_text(pins)
    print(f"Built {TRL_ENV.relative_to(ROOT)}", flush=True)
    return python


def bench_prompts(n: int, tokenizer, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    """``n`` seeded ``PROMPT_WORDS``-word user prompts with one templated token length, and their token ids
    as our recipe renders them (``prompt_token_ids``: chat template up to the assistant's turn)."""
    from training.engine.lm.data import prompt_token_ids

    rng = random.Random(seed)
    texts, ids = [], []
    for _ in range(100 * n):
        text = " ".join(rng.choice(WORDS) for _ in range(PROMPT_WORDS))
        tokens = prompt_token_ids(tokenizer, text)
        if not ids or len(tokens) == len(ids[0]):
            texts.append(text)
            ids.append(tokens)
        if len(texts) == n:
            return texts, ids
    raise RuntimeError(f"found only {len(texts)} prompts of {len(ids[0])} tokens")


def build_reward_folder(policy: Path, folder: Path) -> None:
    """The one-label sequence classifier both sides score with (and start their value model from)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # the new head's "MISSING" load report and the progress bars
    logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    torch.manual_seed(SEED)  # the score head
    model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run_ours(s: dict, work: Path) -> dict:
    from training.engine.methods import train
    from training.engine.recipes.ppo import PPOConfig

    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in s["prompts"]))
    rollout = s["batch"] * s["num_mini_batches"]
    config = PPOConfig(
        model="bundled",
        reward_model=f"local:{s['reward']}",
        train_file=str(data),
        output_dir=str(work / "ours"),
        batch_size=s["batch"],
        gradient_accumulation_steps=1,
        num_mini_batches=s["num_mini_batches"],
        num_ppo_epochs=s["num_ppo_epochs"],
        max_new_tokens=s["max_new_tokens"],
        stop_at_eos=False,
        top_p=1.0,
        **{k: v for k, v in s.items() if k in PPO},
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_grad_norm=None,
        epochs=math.ceil(s["steps"] * rollout / len(s["prompts"])),
        max_steps=s["steps"] * s["num_ppo_epochs"] * s["num_mini_batches"],
        shuffle=False,
        save_final=False,
        seed=SEED,
    )
    marks: dict[str, float] = {}
    logs: list[tuple[float, dict]] = []

    class Keep:
        def on_start(self, total_steps, start_step):
            marks["start"] = time.perf_counter()

        def log(self, metrics, step):
            logs.append((time.perf_counter(), dict(metrics)))

    tick, cpu = time.perf_counter(), time.process_time()
    train(config, callbacks=[Keep()])
    wall, cpu = time.perf_counter() - tick, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "setup_s": marks["start"] - tick, **_ours_steps(marks, logs)}


def _ours_steps(marks: dict, logs: list[tuple[float, dict]]) -> dict:
    """Per PPO step: wall from the previous step's last log (or the start hook) to its own last log."""
    last: dict[int, tuple[float, dict]] = {}
    for when, metrics in logs:
        if "ppo/iteration" in metrics:
            last[int(metrics["ppo/iteration"])] = (when, metrics)
    steps, start = [], marks["start"]
    for _, (when, m) in sorted(last.items()):
        steps.append(
            {
                "wall_s": when - start,
                "rollout_s": m["time/rollout_s"],
                "update_s": when - start - m["time/rollout_s"],
                "response_length": m["val/response_length"],
            }
        )
        start = when
    return {"steps": steps, "scores": [m["objective/scores"] for _, (_, m) in sorted(last.items())]}


def child(side: str, settings_path: Path) -> dict:
    import torch

    from training.engine.runtime.memory import retain_freed_memory

    retain_freed_memory()  # both sides: the allocator setting is not what this compares
    settings = json.loads(settings_path.read_text())
    torch.set_num_threads(settings["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        out = run_ours(settings, Path(tmp))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _spawn(side: str, settings_path: Path) -> dict:
    if side == "trl":
        cmd = [str(trl_python()), str(ROOT / "bench" / "_ppo_trl_side.py"), str(settings_path)]
    else:
        cmd = [sys.executable, __file__, "--child", side, "--settings", str(settings_path)]
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
    if side == "ours_torch_linear":  # torch's own F.linear, as TRL's models run
        env["PREFSTUDIO_ONEDNN_LINEAR"] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
    return {"side": side, **json.loads(proc.stdout.strip().splitlines()[-1])}


def summary(r: dict, rollout: int, *, skip_first: bool = False) -> dict:
    """Means over the PPO steps (``skip_first``: all but the first, which also pays one-time costs on both
    sides: oneDNN's kernel set-up for each new shape on ours, copy-on-write faults on TRL's weights), and
    the tokens each step sampled."""
    steps = r["steps"][1:] if skip_first and len(r["steps"]) > 1 else r["steps"]
    n = len(steps)
    mean = {k: sum(s[k] for s in steps) / n for k in ("wall_s", "rollout_s", "update_s")}
    gen = [s["generate_s"] for s in steps if s.get("generate_s") is not None]
    if "response_length" in steps[0]:
        tokens = sum(s["response_length"] for s in steps) * rollout / n
    else:
        tokens = sum(s["tokens"] for s in steps) / n
    return {**mean, "generate_s": sum(gen) / len(gen) if gen else None, "tokens": tokens}


def print_table(results: list[dict], rollout: int) -> None:
    print(
        f"{'run':18} {'setup s':>8} {'step s':>8} {'rollout s':>10} {'(sample)':>9} {'update s':>9} "
        f"{'total s':>8} {'cpu s':>7} {'tok/step':>9} {'peak MB':>8} {'score/step':>18}"
    )
    for r in results:
        m = summary(r, rollout)
        sample = "" if m["generate_s"] is None else f"{m['generate_s']:.1f}"
        scores = " ".join(f"{x:+.3f}" for x in r["scores"])
        print(
            f"{r['side']:18} {r['setup_s']:8.1f} {m['wall_s']:8.1f} {m['rollout_s']:10.1f} {sample:>9} "
            f"{m['update_s']:9.1f} {r['wall_s']:8.1f} {r['cpu_s']:7.1f} {m['tokens']:9.0f} "
            f"{r['peak_rss_mb']:8.0f} {scores:>18}"
        )
    by = {r["side"]: r for r in results}
    for ours in ("ours", "ours_torch_linear"):
        if ours in by and "trl" in by:
            a, b = summary(by[ours], rollout), summary(by["trl"], rollout)
            rollout_x, update_x = b["rollout_s"] / a["rollout_s"], b["update_s"] / a["update_s"]
            print(
                f"speed ratio {ours}/TRL PPOTrainer: {b['wall_s'] / a['wall_s']:.2f}x per PPO step "
                f"(rollout {rollout_x:.2f}x, update {update_x:.2f}x), "
                f"{by['trl']['wall_s'] / by[ours]['wall_s']:.2f}x whole run"
            )
            a, b = summary(by[ours], rollout, skip_first=True), summary(by["trl"], rollout, skip_first=True)
            if len(by[ours]["steps"]) > 1:
                print(
                    f"  after the first step: {b['wall_s'] / a['wall_s']:.2f}x per PPO step (ours "
                    f"{a['wall_s']:.1f} s = rollout {a['rollout_s']:.1f} + update {a['update_s']:.1f}; TRL "
                    f"{b['wall_s']:.1f} s = {b['rollout_s']:.1f} + {b['update_s']:.1f})"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="PPO steps (rollouts) per run")
    parser.add_argument("--runs", default=DEFAULT_RUNS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.settings)))
        return
    from training.engine.lm.models import ensure_bundled, load_tokenizer

    runs = args.runs.split(",")
    if "trl" in runs:
        trl_python()  # before any timing
    policy = ensure_bundled("smollm2-135m-instruct")  # the one-time GGUF conversion is not timed
    rollout = SIZES["batch"] * SIZES["num_mini_batches"]
    if args.prompts < rollout:
        parser.error(f"--prompts must be at least the rollout batch ({rollout})")
    texts, ids = bench_prompts(args.prompts, load_tokenizer("bundled"))
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    print(
        f"PPO throughput: bundled SmolLM2-135M-Instruct policy/reference, seeded one-label reward and value "
        f"model, {args.prompts} prompts of {len(ids[0])} tokens, {args.steps} PPO steps of {rollout} "
        f"rollouts × {SIZES['max_new_tokens']} sampled tokens (no EOS stop), {SIZES['num_ppo_epochs']} PPO "
        f"epochs × {SIZES['num_mini_batches']} mini-batch, lr {PPO['learning_rate']} constant, AdamW, fp32, "
        f"no gradient checkpointing, {threads} torch threads; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        build_reward_folder(policy, Path(tmp) / "reward")
        settings = {
            "policy": str(policy),
            "reward": str(Path(tmp) / "reward"),
            "prompts": texts,
            "prompt_ids": ids,
            "steps": args.steps,
            "seed": SEED,
            "threads": threads,
            **SIZES,
            **PPO,
        }
        settings_path = Path(tmp) / "settings.json"
        settings_path.write_text(json.dumps(settings))
        for side in runs:
            results.append(_spawn(side, settings_path))
            print(f"  done {side}: {results[-1]['wall_s']:.1f}s", flush=True)
    print_table(results, rollout)


if __name__ == "__main__":
    main()
