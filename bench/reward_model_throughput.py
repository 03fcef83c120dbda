"""Reward-model throughput: our reward_model recipe against TRL's RewardTrainer, same model and pairs.

Bundled SmolLM2-135M-Instruct with a one-label sequence-classification head (the same seeded head on both
sides), 64 seeded conversational pairs in two shapes — a short prompt (a 14-word user turn, ~30 tokens
templated) and a long one (a 300-word user turn, ~360 tokens, as multi-turn HH prompts run) — batch 8,
lr 1e-6 constant, AdamW, 1 epoch, full fine-tuning, fp32, max_length 512 on both (no pair reaches it),
gradient checkpointing off on both, sequential batch order,
one child process per side (its own peak memory).  Ours packs prompt + chosen + rejected (the prompt runs
once); TRL pads chosen and rejected as two sequences.  ``ours_torch_linear`` runs ours with torch's own
``F.linear`` (as TRL has it), to show what packing saves apart from the faster matmul library.  The
tokens each side runs per pair are printed too: packing can save no more than their ratio, so the
speed-up grows with the prompt's share of the pair.
``python bench/reward_model_throughput.py [--pairs N --prompt-words 14,300 --runs ours,trl,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _engine_common import bench_rows, peak_rss_mb  # noqa: E402

MAX_LENGTH, BATCH, LR, SEED = 512, 8, 1e-6, 42
DEFAULT_RUNS = "ours,trl,ours_torch_linear"
DEFAULT_PROMPT_WORDS = "14,300"


def run_ours(rows, work: Path) -> dict:
    from training.engine.methods import train
    from training.engine.recipes.reward_model import RewardModelConfig

    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RewardModelConfig(
        model="bundled",
        train_file=str(data),
        output_dir=str(work / "ours"),
        learning_rate=LR,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        max_length=MAX_LENGTH,
        max_grad_norm=1.0,
        save_final=False,
        seed=SEED,
    )
    steps: dict[int, dict] = {}

    class Keep:
        def log(self, metrics, step):
            steps.setdefault(step, {}).update(metrics)

    tick, cpu = time.perf_counter(), time.process_time()
    train(config, callbacks=[Keep()])
    return {"wall_s": time.perf_counter() - tick, "cpu_s": time.process_time() - cpu, "steps": steps}


def run_trl(rows, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from training.engine.lm.models import load_tokenizer
    from training.engine.lm.rewards import load_reward_model

    steps: dict[int, dict] = {}

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            steps.setdefault(state.global_step, {}).update(logs or {})

    args = RewardConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_length=MAX_LENGTH,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=SEED,
        train_sampling_strategy="sequential",
        max_grad_norm=1.0,
        weight_decay=0.0,
        dataloader_num_workers=0,
        center_rewards_coefficient=None,
    )
    tokenizer = load_tokenizer("bundled")
    torch.manual_seed(SEED)  # the score head: drawn as our recipe draws it (the run's seed, then loading)
    model = load_reward_model("bundled", pad_token_id=tokenizer.pad_token_id)
    tick, cpu = time.perf_counter(), time.process_time()
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Keep()],
    )
    trainer.train()
    return {"wall_s": time.perf_counter() - tick, "cpu_s": time.process_time() - cpu, "steps": steps}


def tokens_per_pair(rows) -> tuple[float, float]:
    """``(ours, TRL's)`` tokens run per pair: the packed prompt + chosen + rejected, against chosen and
    rejected as two sequences, each batch padded to its longest."""
    from training.engine.lm.data import tokenize_rows
    from training.engine.lm.models import load_tokenizer

    pairs, _ = tokenize_rows(rows, load_tokenizer("bundled"), max_length=MAX_LENGTH)
    ours = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    theirs = 0
    for start in range(0, len(pairs), BATCH):
        batch = pairs[start : start + BATCH]
        longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in batch)
        theirs += 2 * len(batch) * longest
    return ours / len(pairs), theirs / len(pairs)


def child(side: str, n_pairs: int, prompt_words: int) -> dict:
    import torch

    from training.engine.runtime.memory import retain_freed_memory

    retain_freed_memory()  # both sides: the allocator setting is not what this compares
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    rows = bench_rows(n_pairs, prompt_words=prompt_words)
    with tempfile.TemporaryDirectory() as tmp:
        out = run_trl(rows, Path(tmp)) if side == "trl" else run_ours(rows, Path(tmp))
    first = out["steps"].get(1, {})
    return {
        "side": side,
        "wall_s": out["wall_s"],
        "cpu_s": out["cpu_s"],
        "pairs_per_s": n_pairs / out["wall_s"],
        "peak_rss_mb": peak_rss_mb(),
        "step1_loss": first.get("loss"),
    }


def _spawn(side: str, n_pairs: int, prompt_words: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--pairs",
        str(n_pairs),
        "--prompt-words",
        str(prompt_words),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if side in ("ours_torch_linear", "trl"):  # TRL's model runs torch's own F.linear, as TRL has it
        env["PREFSTUDIO_ONEDNN_LINEAR"] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--runs", default=DEFAULT_RUNS)
    parser.add_argument("--prompt-words", default=DEFAULT_PROMPT_WORDS, help="user-turn words, per shape")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pairs, int(args.prompt_words))))
        return
    from training.engine.lm.models import ensure_bundled

    ensure_bundled("smollm2-135m-instruct")  # the one-time GGUF conversion is not part of any timing
    print(
        f"Reward-model throughput: bundled SmolLM2-135M-Instruct + one-label score head, {args.pairs} pairs, "
        f"batch {BATCH}, lr {LR} constant, AdamW, 1 epoch, full fine-tuning, fp32, max_length {MAX_LENGTH}, "
        "no gradient checkpointing, sequential order, "
        f"{os.environ.get('BENCH_THREADS', '2')} torch threads; ours packs the shared prompt once"
    )
    for prompt_words in (int(w) for w in args.prompt_words.split(",")):
        _shape(args.runs.split(","), args.pairs, prompt_words)


def _shape(sides: list[str], n_pairs: int, prompt_words: int) -> None:
    ours_tokens, trl_tokens = tokens_per_pair(bench_rows(n_pairs, prompt_words=prompt_words))
    print(
        f"\n{prompt_words}-word user turn: {ours_tokens:.0f} tokens per pair packed (ours) vs "
        f"{trl_tokens:.0f} as two padded sequences (TRL), {trl_tokens / ours_tokens:.2f}x fewer"
    )
    results = []
    for side in sides:
        results.append(_spawn(side, n_pairs, prompt_words))
        print(f"  done {side}: {results[-1]['wall_s']:.1f}s", flush=True)
    print(f"{'run':20} {'wall s':>8} {'cpu s':>8} {'pairs/s':>8} {'peak MB':>8} {'step-1 loss':>12}")
    for r in results:
        loss = r["step1_loss"]
        print(
            f"{r['side']:20} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['pairs_per_s']:8.2f} "
            f"{r['peak_rss_mb']:8.0f} {loss if loss is None else f'{loss:12.4f}'}"
        )
    by = {r["side"]: r for r in results}
    for ours in ("ours", "ours_torch_linear"):
        if ours in by and "trl" in by:
            ratio = by["trl"]["wall_s"] / by[ours]["wall_s"]
            print(f"speed ratio {ours}/TRL RewardTrainer ({prompt_words}-word prompts): {ratio:.2f}x wall")


if __name__ == "__main__":
    main()
