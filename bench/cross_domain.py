"""Cross-domain fast-slow DPO (``training/engine/cross_domain.py``): trained on domain A ("write …": the
response mentioning ``z`` wins) then domain B ("shout …": the response mentioning ``q`` wins, and half of
B's losing responses mention ``z``), how much of A's held-out pairwise accuracy sequential DPO, chained OFS
and COFS keep.

Per seed: the three forgetting matrices side by side (rows: after A, after B; columns: A's and B's test
accuracy, h > 0 against the original base), COFS's weights (chosen per row on the validation mix from the
simplex grid, step 0.25), each kept fast module's step; then A and B after B for every method.  Every
stage uses the same settings (printed first): LoRA on q/k/v/o, fp32, constant learning rate, torch
threads set explicitly.

``python bench/cross_domain.py [--seeds 0,1,2,3 --steps 24 --model tiny --threads 1]``; ``--model bundled``
runs it on SmolLM2-135M (lr 1e-4 unless ``--lr``, minutes per seed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def _matrices(r) -> list[str]:
    methods = (r.sequential, r.ofs, r.cofs)
    lines = [" " * 12 + "".join(f"{m.method:<16}" for m in methods), " " * 12 + "A     B         " * 3]
    for i, name in enumerate(r.cofs.domains):
        cells = "".join(f"{m.accuracy[i][0]:.3f} {m.accuracy[i][1]:.3f}     " for m in methods)
        lines.append(f"  after {name}   {cells}")
    weights = " · ".join("(" + ", ".join(f"{w:.2f}" for w in row) + ")" for row in r.cofs.weights)
    kept = ", ".join(f"{m.method} {k.domain}@{k.step}" for m in (r.ofs, r.cofs) for k in m.modules)
    lines.append(f"  COFS weights per row: {weights}; kept fast modules (domain@step): {kept}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per domain")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--conflict", type=float, default=0.5, help="share of B's losers that mention z")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from training.engine.cross_domain import CrossDomainSettings, reproduce

    lr = args.lr if args.lr is not None else (1e-3 if args.model.startswith("tiny") else 1e-4)
    s = CrossDomainSettings(model=args.model, learning_rate=lr, max_steps=args.steps)
    print(
        f"model {args.model} · precision {s.precision} · LoRA r {s.lora_r} α {s.lora_alpha} · lr {lr} "
        f"({s.lr_scheduler}, fast ×{s.fast_lr_ratio}, chase λ {s.chase_weight}) · β {s.beta} · "
        f"{args.steps} steps/domain · batch {s.batch_size} · checkpoint every {s.checkpoint_every} · "
        f"validation {s.validation_fraction:.0%} of train · B conflict {args.conflict} · "
        f"threads {args.threads}"
    )
    final = []
    for seed in (int(x) for x in args.seeds.split(",")):
        tick = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            r = reproduce(
                Path(work),
                seed=seed,
                model=args.model,
                conflict=args.conflict,
                learning_rate=lr,
                max_steps=args.steps,
            )
        print(f"seed {seed} ({time.perf_counter() - tick:.0f} s)")
        print("\n".join(_matrices(r)), flush=True)
        final.append((seed, r.after_last()))
    print("\nafter B     A: sequential  OFS    COFS   |  B: sequential  OFS    COFS   | COFS keeps more of A")
    for seed, after in final:
        a = [after[m]["A"] for m in ("sequential_dpo", "ofs", "cofs")]
        b = [after[m]["B"] for m in ("sequential_dpo", "ofs", "cofs")]
        print(
            f"seed {seed:<5}    {a[0]:.3f}      {a[1]:.3f}  {a[2]:.3f}  |     {b[0]:.3f}      {b[1]:.3f}  "
            f"{b[2]:.3f}  | {'yes' if a[2] > a[0] else 'no'}"
        )


if __name__ == "__main__":
    main()
