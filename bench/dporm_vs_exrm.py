"""DPORM vs EXRM (Lin et al.) on the bundled SmolLM2-135M: a DPO model and a reward model trained on the
same in-distribution pairs, then both accuracies on held-out in-distribution pairs and on shifted pairs
(``training/engine/reward_generalisation.py``: lower-case answers preferred; the shifted family has other
words and longer prompts).  Prints each model's accuracy per split and its drop, per seed.

``python bench/dporm_vs_exrm.py [--seeds 0 --threads 2 --train 32 --heldout 16 --shifted 32]`` (a few
minutes a seed on two idle cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=32)
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--shifted", type=int, default=32)
    parser.add_argument("--dpo-lr", type=float, default=1e-5)
    parser.add_argument("--rm-lr", type=float, default=3e-5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from training.engine.reward_generalisation import GeneralisationSetup, run_generalisation

    print(f"model bundled SmolLM2-135M · torch threads {args.threads} · train {args.train} pairs")
    print("seed  split            n    DPO acc  RM acc")
    for seed in (int(s) for s in args.seeds.split(",")):
        setup = GeneralisationSetup(
            model="bundled",
            seed=seed,
            train_pairs=args.train,
            heldout_pairs=args.heldout,
            shifted_pairs=args.shifted,
            dpo_learning_rate=args.dpo_lr,
            rm_learning_rate=args.rm_lr,
        )
        tick = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            report = run_generalisation(setup, Path(work))
        for split in ("in_distribution", "shifted"):
            part = report[split]
            print(
                f"{seed:<5} {split:<16} {part['n']:<4} {part['dpo']['accuracy']:.3f}    "
                f"{part['reward_model']['accuracy']:.3f}"
            )
        drop = report["drop"]
        print(
            f"{seed:<5} drop (in − shifted)    {drop['dpo']:+.3f}   {drop['reward_model']:+.3f}"
            f"   ({time.perf_counter() - tick:.0f} s)"
        )


if __name__ == "__main__":
    main()
