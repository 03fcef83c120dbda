"""The launch form's quick preset on the bundled model (``training/presets.py``): wall time, seconds per
step and the held-out reward margin as it trains, against the paper defaults for the same number of steps.

Data: the text demo (``prefstudio/demo/pairwise.jsonl``) as TRL pairs, the careful response chosen, its
three shipped held-out items as the test split.  Both runs: the bundled SmolLM2-135M, fp32 on CPU, batch 4,
max length 256, the same steps and evaluation cadence, torch threads ``--threads``; the quick preset adds
LoRA (r 16, α 32) at lr 5e-4, the paper defaults train every weight at lr 5e-7.

``python bench/quick_preset.py [--steps 30 --threads 2 --skip-paper]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


class Timer:
    def __init__(self):
        self.ticks, self.evals = [], []

    def log(self, metrics, step):
        self.ticks.append(time.perf_counter())
        if "eval/rewards/margins" in metrics:
            self.evals.append((step, metrics["eval/rewards/margins"], metrics["eval/rewards/accuracies"]))


def demo_pairs(path: Path) -> str:
    rows = [json.loads(line) for line in (ROOT / "prefstudio/demo/pairwise.jsonl").read_text().splitlines()]
    pairs = [
        {
            "prompt": r["prompt"],
            "chosen": r["responses"][0],
            "rejected": r["responses"][1],
            "split": r.get("split", "train"),
        }
        for r in rows
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return str(path)


def run(name: str, overrides: dict, data: str, work: Path, steps: int) -> None:
    from training.engine.methods import train
    from training.engine.recipes.dpo_configs import DPOConfig

    timer = Timer()
    started = time.perf_counter()
    config = DPOConfig(
        model="bundled",
        train_file=data,
        output_dir=str(work / name),
        ref_cache_dir=str(work / "ref"),
        batch_size=4,
        max_length=256,
        max_steps=steps,
        epochs=1000,
        eval_steps=max(1, steps // 3),
        logging_steps=1,
        keep_checkpoints=1,
        **overrides,
    )
    train(config, callbacks=[timer])
    wall = time.perf_counter() - started
    gaps = sorted(b - a for a, b in zip(timer.ticks, timer.ticks[1:], strict=False))
    median = gaps[len(gaps) // 2] if gaps else float("nan")
    margins = " → ".join(f"{m:+.3f} (acc {a:.2f}) @{s}" for s, m, a in timer.evals)
    print(f"{name:<15} wall {wall:6.0f} s · {median:5.2f} s/step · held-out margin 0 → {margins}", flush=True)
    return wall, timer.evals[-1][1] if timer.evals else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true", help="time the quick preset only")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from training.presets import QUICK

    quick = {
        k: v
        for k, v in QUICK.items()
        if k in ("lora", "lora_r", "lora_alpha", "learning_rate", "warmup_ratio")
    }
    print(
        f"bundled SmolLM2-135M · demo pairs · {args.steps} steps · batch 4 · fp32 CPU · "
        f"{args.threads} threads"
    )
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = demo_pairs(work / "demo.jsonl")
        quick_wall, quick_margin = run("quick preset", quick, data, work, args.steps)
        if not args.skip_paper:
            paper_wall, paper_margin = run("paper defaults", {}, data, work, args.steps)
            print(
                f"quick / paper: wall {quick_wall / paper_wall:.2f}× · final held-out margin "
                f"{quick_margin:+.3f} vs {paper_margin:+.3f}"
            )


if __name__ == "__main__":
    main()
