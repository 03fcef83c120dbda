"""Online loops on the bundled model (``training/loop_reproduction.py``): the issue's reproductions and the
wall time of one round of each loop kind.

On the checkable preference (a response that mentions the letter ``z`` beats one that does not), a reward
model is trained on the property pairs and a policy DPO-tuned on 16 seed pairs; then, through the studio's
own loop service (generate → label → freeze → train → evaluate, in this process):

* a reward-model loop (best vs worst) for 3 rounds: the held-out reward-model score per round;
* one RSO round (k = 4·accept, accept ``--accept``) against one round of plain samples paired as drawn
  (k = accept), the same pairs per prompt and the same sigmoid-norm training: the final held-out score;
* self-rewarding (the cream labeller) from the tuned policy for 3 rounds, trained with ``cream`` and with
  plain ``dpo``: each round's consistency C and held-out score.

Like for like: every loop samples the same prompts with the same settings (temperature 1, ``--tokens`` new
tokens), trains LoRA (r 8) at the same learning rate and epochs, fp32 on CPU, torch threads ``--threads``;
the held-out score is the mean reward-model score of greedy answers to the same held-out prompts.  There is
no outside implementation of these loops to time against, so the ratios printed are each method's against
its own baseline in the same run (RSO / sampled pairs, CREAM / plain self-rewarding).

``python bench/loops.py [--model bundled --seed 0 --prompts 16 --threads 2]``; ``--model tiny`` runs the
same in a minute.  SQLite and artifacts in a temporary folder; the bundled model's converted copy is read
from (or written to) the usual model cache.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _django_bench import django_setup  # noqa: E402


def _fmt(values) -> str:
    return " → ".join("—" if v is None else f"{v:+.3f}" for v in values)


def _round_times(reading) -> str:
    return ", ".join(f"{s:.0f} s" for s in reading.round_seconds)


def child(args) -> None:
    django_setup()
    import torch
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from annotation.models import Membership, Project, Role, TaskType
    from training.loop_reproduction import (
        cream_against_plain_self_rewarding,
        lab_setup,
        reward_model_loop,
        rso_against_sampled_pairs,
    )
    from training.models import Location, ModelEntry
    from training.services.registry import model_entry_ensure_bundled

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench")
    project = Project.objects.create(name="loop reproductions", task_type=TaskType.PAIRWISE)
    Membership.objects.create(project=project, user=user, role=Role.MANAGER)
    tiny = args.model == "tiny"
    work = Path(os.environ["ARTIFACT_ROOT"]).parent / "lab"
    if tiny:
        from training.engine.lm.tiny import tiny_llama, tiny_tokenizer

        tokenizer = tiny_tokenizer()
        tiny_llama(len(tokenizer), hidden=64, layers=2, heads=2).save_pretrained(work / "policy")
        tokenizer.save_pretrained(work / "policy")
        policy = ModelEntry.objects.create(name="tiny", location=Location.LOCAL, path=str(work / "policy"))
    else:
        policy = model_entry_ensure_bundled()
    lr = (2e-3, 1e-3, 1e-3) if tiny else (3e-5, 1e-5, 5e-4)
    tick = time.perf_counter()
    lab = lab_setup(
        work,
        project=project,
        user=user,
        policy=policy,
        seed=args.seed,
        n_train=3 * args.prompts,
        n_test=args.prompts,
        fit_learning_rate=lr[0],
        tune_learning_rate=lr[1],
    )
    print(
        f"setup: reward model held-out accuracy {lab.reward_accuracy:.3f}; tuned policy; "
        f"{time.perf_counter() - tick:.0f} s",
        flush=True,
    )
    train = {
        "method": "dpo",
        "learning_rate": lr[2],
        "epochs": 2,
        "batch_size": 4,
        "max_length": 128,
        "warmup_ratio": 0.0,
        "lora": not tiny,
        "save_steps": None,
        "eval_steps": None,
        "beta": 0.1,
    }
    loop = {
        "k": 4,
        "max_new_tokens": args.tokens,
        "max_prompts": 2 * args.prompts,
        "eval_prompts": args.prompts,
        "temperature": 1.0,
    }

    def show(reading, extra: str = "") -> None:
        state = "" if reading.state == "succeeded" else f" [{reading.state}: {reading.error}]"
        print(
            f"  {reading.name:<28} held-out score {_fmt(reading.scores)}{extra}"
            f"\n  {'':<28} win rate {_fmt(reading.win_rates)} · KL {_fmt(reading.kls)}"
            f" · pairs {reading.pairs}"
            f" · round wall time {_round_times(reading)}{state}",
            flush=True,
        )

    print("\nreward-model loop (best vs worst, dpo), round 0 = the starting policy:")
    show(reward_model_loop(lab, train=train, **loop))

    print(f"\nRSO (k {4 * args.accept}, accept {args.accept}, β 0.5) vs plain samples paired as drawn:")
    sigmoid = {**train, "method": "sigmoid_norm", "gamma": 0.05}
    same = {name: value for name, value in loop.items() if name != "k"}
    rso, plain = rso_against_sampled_pairs(lab, k=4 * args.accept, accept=args.accept, train=sigmoid, **same)
    show(rso, f" · acceptance {_fmt(rso.acceptance)}")
    show(plain)
    print(f"  RSO − sampled pairs, final held-out score: {rso.scores[-1] - plain.scores[-1]:+.3f}")

    print("\nself-rewarding from the tuned policy (cream labeller), C per round:")
    cream, dpo = cream_against_plain_self_rewarding(lab, train=train, **{**loop, "k": 5})
    show(cream, f" · C {_fmt(cream.consistency)}")
    show(dpo, f" · C {_fmt(dpo.consistency)}")
    print(
        f"  CREAM − plain, round {len(cream.scores) - 1}: score {cream.scores[-1] - dpo.scores[-1]:+.3f}, "
        f"C {(cream.consistency[-1] or 0) - (dpo.consistency[-1] or 0):+.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["bundled", "tiny"], default="bundled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=16, help="held-out prompts (3× as many to train on)")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--accept", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(
        f"online loops on {args.model} · seed {args.seed} · {args.prompts} held-out prompts · "
        f"{args.tokens} new tokens · fp32 CPU · {args.threads} threads"
    )
    with tempfile.TemporaryDirectory(prefix="prefstudio-bench-loops-") as folder:
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{Path(folder) / 'bench.sqlite3'}",
            "PREFSTUDIO_VAR": folder,
            "ARTIFACT_ROOT": str(Path(folder) / "artifacts"),
            "MODEL_CACHE": os.environ.get("MODEL_CACHE", str(ROOT / "var" / "models")),
            "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
            "PREFSTUDIO_EMBEDDED_ONLY": "1",
            "DEBUG": "0",
        }
        subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=env, cwd=ROOT, check=True)
    return None


if __name__ == "__main__":
    main()
