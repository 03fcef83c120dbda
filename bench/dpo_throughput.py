"""DPO throughput: our engine against TRL's DPOTrainer, same machine, same model, same pairs.

Bundled SmolLM2-135M-Instruct (fp32 HF folder), 64 seeded pairs, batch 8, β 0.1, lr 1e-6 constant, AdamW,
2 epochs, full fine-tuning, max_length 256 on both sides (no pair reaches it), gradient checkpointing off on
both, the same (sequential) batch order.  Each side runs in its own child process so peak memory is its own;
each child measures its matmul rate itself.  ``python bench/dpo_throughput.py [--pairs N --epochs E
--runs ours:fp32,trl:fp32,...]``; the defaults run all six: ours/TRL fp32, TRL with precomputed reference
log-probs, ours/TRL bf16 autocast, and ours in fp32 with torch's own ``F.linear`` (MKL, as TRL has it), to
show what the engine saves apart from the faster matmul library.
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

from _engine_common import bench_rows, matmul_rates, minimal_flops, peak_rss_mb  # noqa: E402

MAX_LENGTH, BATCH, BETA, LR = 256, 8, 0.1, 1e-6
DEFAULT_RUNS = "ours:fp32,trl:fp32,trl_precompute:fp32,ours:bf16,trl:bf16,ours_torch_linear:fp32"


def _minimal(rows, epochs):
    from training.engine.lm.data import tokenize_rows
    from training.engine.lm.models import load_model, load_tokenizer

    pairs, _ = tokenize_rows(rows, load_tokenizer("bundled"), max_length=MAX_LENGTH)
    return minimal_flops(load_model("bundled").config, pairs, epochs), pairs


def run_ours(rows, epochs: int, precision: str, work: Path) -> dict:
    from training.engine.lm.models import load_model
    from training.engine.methods import train
    from training.engine.recipes.dpo import DPORecipe
    from training.engine.recipes.dpo_configs import DPOConfig

    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = DPOConfig(
        model="bundled",
        train_file=str(data),
        output_dir=str(work / "ours"),
        ref_cache_dir=str(work / "ref"),
        beta=BETA,
        learning_rate=LR,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        max_length=MAX_LENGTH,
        max_grad_norm=1.0,
        precision=precision,
        save_final=False,
    )
    steps: dict[int, dict] = {}

    class Keep:
        def log(self, metrics, step):
            steps.setdefault(step, {}).update(metrics)

    model = load_model("bundled")
    tick, cpu = time.perf_counter(), time.process_time()
    train(config, callbacks=[Keep()], recipe=DPORecipe(config, model=model))
    return {"wall_s": time.perf_counter() - tick, "cpu_s": time.process_time() - cpu, "steps": steps}


def run_trl(rows, epochs: int, precision: str, work: Path, precompute: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from training.engine.lm.models import load_model, load_tokenizer

    steps: dict[int, dict] = {}

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            steps.setdefault(state.global_step, {}).update(logs or {})

    args = DPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=epochs,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=MAX_LENGTH,
        truncation_mode="keep_start",
        gradient_checkpointing=False,
        bf16=precision == "bf16",
        fp16=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        train_sampling_strategy="sequential",
        precompute_ref_log_probs=precompute,
        max_grad_norm=1.0,
        weight_decay=0.0,
        dataloader_num_workers=0,
    )
    model, tokenizer = load_model("bundled", onednn_linears=False), load_tokenizer("bundled")
    tick, cpu = time.perf_counter(), time.process_time()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Keep()],
    )
    trainer.train()
    return {"wall_s": time.perf_counter() - tick, "cpu_s": time.process_time() - cpu, "steps": steps}


def child(side: str, precision: str, n_pairs: int, epochs: int) -> dict:
    import torch

    from training.engine.runtime.memory import retain_freed_memory

    retain_freed_memory()  # both sides: the allocator setting is not what this compares
    torch.manual_seed(0)
    rows = bench_rows(n_pairs)
    flops, pairs = _minimal(rows, epochs)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rates_before = matmul_rates(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        if side in ("ours", "ours_torch_linear"):
            out = run_ours(rows, epochs, precision, Path(tmp))
        else:
            out = run_trl(rows, epochs, precision, Path(tmp), precompute=side == "trl_precompute")
    rates_after = matmul_rates(dtype)  # the machine is shared: average before and after, per path
    rates = {path: (rates_before[path] + rates_after[path]) / 2 for path in rates_before}
    best_path = max(rates, key=rates.get)
    rate = rates[best_path]
    wall = out["wall_s"]
    first, second = out["steps"].get(1, {}), out["steps"].get(2, {})
    return {
        "side": side,
        "precision": precision,
        "wall_s": wall,
        "cpu_s": out["cpu_s"],
        "pairs_per_s": n_pairs * epochs / wall,
        "peak_rss_mb": peak_rss_mb(),
        "matmul_gflops": rate / 1e9,
        "matmul_path": best_path,
        "matmul_gflops_by_path": {path: r / 1e9 for path, r in rates.items()},
        "minimal_tflop": flops / 1e12,
        "roofline_share": flops / rate / wall,
        "step1_logps_chosen": first.get("logps/chosen"),
        "step1_logps_rejected": first.get("logps/rejected"),
        "step2_loss": second.get("loss"),
        "tokens_per_pair": sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
        / len(pairs),
    }


def _spawn(side: str, precision: str, n_pairs: int, epochs: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"{side}:{precision}",
        "--pairs",
        str(n_pairs),
        "--epochs",
        str(epochs),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if side == "ours_torch_linear":
        env["PREFSTUDIO_ONEDNN_LINEAR"] = "0"  # training.engine.lm.cpu_linear falls back to F.linear
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{side}:{precision} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(results: list[dict]) -> None:
    print(
        f"{'run':22} {'wall s':>8} {'cpu s':>8} {'pairs/s':>8} {'peak MB':>8} {'GFLOP/s':>8} {'roofline':>8}"
    )
    for r in results:
        name = f"{r['side']}:{r['precision']}"
        print(
            f"{name:22} {r['wall_s']:8.1f} {r.get('cpu_s', float('nan')):8.1f} {r['pairs_per_s']:8.3f} "
            f"{r['peak_rss_mb']:8.0f} {r['matmul_gflops']:8.1f} {r['roofline_share']:8.1%}"
        )
    print("GFLOP/s is the fastest matmul path measured in the run's own process (the roofline's rate):")
    for r in results:
        by_path = ", ".join(f"{p} {g:.1f}" for p, g in r["matmul_gflops_by_path"].items())
        print(f"  {r['side']}:{r['precision']}: {by_path}")
    by = {(r["side"], r["precision"]): r for r in results}
    for ours, trl in (
        (("ours", "fp32"), ("trl", "fp32")),
        (("ours", "fp32"), ("trl_precompute", "fp32")),
        (("ours", "bf16"), ("trl", "bf16")),
        (("ours_torch_linear", "fp32"), ("trl", "fp32")),
    ):
        if ours in by and trl in by:
            a, b = by[ours], by[trl]
            ratio = b["wall_s"] / a["wall_s"]
            cpu_ratio = b.get("cpu_s", float("nan")) / a.get("cpu_s", float("nan"))
            label = f"{ours[0]}/TRL ({trl[0]}, {trl[1]})"
            print(f"speed ratio {label}: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time")
            if ours[1] == "fp32":
                _parity(a, b)


def _parity(a: dict, b: dict) -> None:
    for key in ("step1_logps_chosen", "step1_logps_rejected"):
        if a[key] is not None and b[key] is not None:
            rel = abs(a[key] - b[key]) / abs(b[key])
            verdict = "OK" if rel <= 1e-3 else "FAIL"
            print(f"  parity {key}: ours {a[key]:.4f} TRL {b[key]:.4f} rel diff {rel:.2e} {verdict}")
    if a["step2_loss"] is not None and b["step2_loss"] is not None:
        diff = abs(a["step2_loss"] - b["step2_loss"])
        print(
            f"  parity step2 loss: ours {a['step2_loss']:.5f} TRL {b['step2_loss']:.5f} diff {diff:.1e} "
            f"{'OK' if diff <= 1e-3 else 'FAIL'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", default=DEFAULT_RUNS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, precision = args.child.split(":")
        print(json.dumps(child(side, precision, args.pairs, args.epochs)))
        return
    from training.engine.lm.models import ensure_bundled

    ensure_bundled("smollm2-135m-instruct")  # the one-time GGUF conversion is not part of any timing
    print(
        f"DPO throughput: bundled SmolLM2-135M-Instruct, {args.pairs} pairs, batch {BATCH}, β {BETA}, "
        f"lr {LR} constant, AdamW, {args.epochs} epochs, full fine-tuning, max_length {MAX_LENGTH} "
        "(keep_start) on both, gradient checkpointing off on both, sequential batch order, "
        "fp32 unless marked bf16 (autocast), fused AdamW on both (TRL's default with this torch), "
        "glibc told to keep freed memory on both; "
        "linear layers: ours through oneDNN (IEEE fp32, or autocast bf16), TRL and ours_torch_linear "
        "through torch's F.linear (MKL sgemm for fp32)"
    )
    results = []
    for spec in args.runs.split(","):
        side, precision = spec.split(":")
        results.append(_spawn(side, precision, args.pairs, args.epochs))
        r = results[-1]
        print(
            f"  done {spec}: {r['wall_s']:.1f}s ({r['tokens_per_pair']:.0f} tokens/pair packed)", flush=True
        )
    _report(results)


if __name__ == "__main__":
    main()
