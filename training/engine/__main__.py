"""``python -m training.engine train CONFIG.yaml [--resume]``: train any method from an exported dataset.

The run writes ``metrics.jsonl``, ``checkpoint-N/`` folders and, when it succeeds, ``final/`` (the model
every consumer loads: a plain Hugging Face folder) into the config's ``output_dir``.
"""

from __future__ import annotations

import argparse
import sys

from training.engine.methods import load_config, train
from training.engine.runtime.config import ConfigError
from training.engine.runtime.loop import NonFiniteError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.engine", description="PrefStudio training engine"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("train", help="train with a YAML config (fields of the method's config dataclass)")
    run.add_argument("config", help="YAML file; 'method' picks the config class (dpo, rdpo, ipo, ...)")
    run.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in output_dir"
    )
    run.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(config, resume=args.resume, progress=not args.no_progress)
    except NonFiniteError as exc:
        print(f"training stopped: {exc}", file=sys.stderr)
        return 1
    print(f"{result.status} after {result.step} steps; checkpoint: {result.last_checkpoint}")
    if result.final_model:
        print(f"final model: {result.final_model}")
    if result.eval_metrics:
        print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in result.eval_metrics.items()))
    if result.dropped:
        print("dropped rows: " + ", ".join(f"{k}={v}" for k, v in result.dropped.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
