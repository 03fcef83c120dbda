"""The RLHF reproduction (``training/engine/rlhf_reproduction.py``): a reward model learns "a response that
mentions the target letter is preferred"; PPO against it raises the letter's frequency and the reward-model
score over the base at a bounded KL; RTO (the DPO model's token rewards inside PPO) reaches PPO's final
running-mean score in fewer rollout batches.

Per seed: the reward model's held-out accuracy; the frequency and mean score of sampled held-out
responses (4 per prompt, one fixed generator for base and trained) for the base, PPO and RTO; PPO's last
``objective/kl``; and the rollout batches each method's running-mean score (window 4) took to reach PPO's
final one.  Both runs share every rollout setting (16 prompts per batch, 2 mini-batches, 2 PPO epochs,
12 new tokens, temperature 1, lr 1e-3 on the tiny model), fp32, torch threads set explicitly.

``python bench/ppo_reproduction.py [--seeds 0,1,2,3 --steps 128 --model tiny --threads 1]``; ``--model
bundled`` runs it on SmolLM2-135M (lr 1e-5, minutes per seed).
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
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dpo-beta", type=float, default=1.0, help="RTO's β₁ (see reproduce's docstring)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from training.engine.rlhf_reproduction import reproduce

    tiny = args.model.startswith("tiny")
    lr, fit_lr = (1e-3, 2e-3) if tiny else (1e-5, 3e-5)
    print(
        f"model {args.model} · {args.steps} PPO/RTO steps · lr {lr} · RTO β₁ {args.dpo_beta} · "
        f"threads {args.threads}"
    )
    print(
        "seed  RM acc  freq base→PPO→RTO     score base→PPO→RTO        PPO KL  "
        "batches to half PPO's gain: PPO RTO"
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        tick = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            r = reproduce(
                Path(work),
                seed=seed,
                model=args.model,
                max_steps=args.steps,
                learning_rate=lr,
                fit_learning_rate=fit_lr,
                dpo_beta=args.dpo_beta,
                window=4,
            )
        print(
            f"{seed:<5} {r.reward_model_accuracy:.3f}   "
            f"{r.base.frequency:.2f}→{r.ppo.frequency:.2f}→{r.rto.frequency:.2f}"
            f"      {r.base.score:+.2f}→{r.ppo.score:+.2f}→{r.rto.score:+.2f}       {r.ppo_final_kl:5.2f}   "
            f"{r.ppo_batches_to_target} {r.rto_batches_to_target}   ({time.perf_counter() - tick:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
