"""``python -m training.engine train CONFIG.yaml [--resume]``: train any method from an exported dataset.

Alone it is one process; under ``torchrun --nproc-per-node N … -m training.engine train CONFIG.yaml`` the
same config trains on N processes with the same global batch (``runtime/distributed.py``), rank 0 writing.
The run writes ``metrics.jsonl``, ``checkpoint-N/`` folders and, when it succeeds, ``final/`` (the model
every consumer loads: a plain Hugging Face folder) into the config's ``output_dir``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.engine.methods import load_config, train
from training.engine.reporting import ReportError, StudioReporter
from training.engine.runtime.config import ConfigError
from training.engine.runtime.distributed import DistributedError, is_main_process, leave_process_group
from training.engine.runtime.loop import NonFiniteError
from training.engine.supervision import die_with_parent, result_write


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
    run.add_argument(
        "--cancel-file",
        help="stop (with a checkpoint) before the next step once this file exists: how a supervisor cancels",
    )
    run.add_argument(
        "--die-with-parent",
        action="store_true",
        help="end when the parent process ends, even by SIGKILL (Linux): a supervised run leaves no orphans",
    )
    run.add_argument(
        "--report-to",
        metavar="URL",
        help="report to the studio's job at URL (…/api/jobs/ID/report; token in $PREFSTUDIO_TOKEN): "
        "how a run outside the studio's workers (Slurm) feeds its job page",
    )
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    cancel = Path(args.cancel_file) if args.cancel_file else None
    should_cancel = cancel.exists if cancel else None
    reporter = None
    if args.report_to:
        should_cancel = lambda: bool(cancel and cancel.exists())  # noqa: E731 - every rank asks
        if is_main_process():
            try:
                reporter = StudioReporter(args.report_to)
                reporter.start()
            except (ReportError, OSError) as exc:
                print(f"cannot report to the studio: {exc}", file=sys.stderr)
                return 2
            asked, should_cancel = should_cancel, lambda: asked() or reporter.should_cancel()  # noqa: E731
    try:
        result = train(
            config,
            resume=args.resume,
            progress=not args.no_progress,
            should_cancel=should_cancel,
            callbacks=[reporter] if reporter else (),
        )
    except (NonFiniteError, DistributedError) as exc:
        print(f"training stopped: {exc}", file=sys.stderr)
        if reporter:
            reporter.finish("failed", step=0, error=f"training stopped: {exc}")
        leave_process_group()
        return 1
    except Exception as exc:
        if reporter:
            reporter.finish("failed", step=0, error=f"{type(exc).__name__}: {exc}")
        raise
    if is_main_process():
        result_write(result)
        if reporter:
            reporter.finish(result.status, step=result.step)
    # every rank waits for result.json: a supervisor on another node may see its own ranks end first
    leave_process_group(synchronise=True)
    if not is_main_process():
        return 0  # rank 0 reports the run
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
