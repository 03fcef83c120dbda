"""After a run: held-out accuracy before/after, base vs trained generations, per-token reward heatmap;
for a diffusion job, base and trained samples side by side and the held-out implicit accuracy; for a
PPO/RTO job, the base and trained policies' greedy held-out generations with their reward-model scores
and KL, and the score distribution before and after.

Computed once by the worker when a job succeeds and stored as ``eval_report.json`` in its folder."""

import json
from pathlib import Path

from ..charts import score_histogram
from .artifacts import SAMPLE_FILE, SAMPLE_STEP, SAMPLES_FOLDER
from .paths import job_dir
from .rlhf import held_out_generations

REPORT = "eval_report.json"
MAX_PAIRS = 32


def evaluation_report(*, job) -> dict | None:
    """The job's stored evaluation report (``eval_report.json`` in its folder), or None."""
    path = job_dir(job) / REPORT
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def preference_accuracy(model, pairs) -> float | None:
    """Share of pairs whose chosen answer has the higher mean per-token log-prob under ``model``."""
    from training.engine.lm.logps import unpacked_logps

    if not pairs:
        return None
    wins = [float(c.mean() > r.mean()) for c, r in unpacked_logps(model, pairs)]
    return sum(wins) / len(wins)


def reward_color(value: float, scale: float) -> str:
    """Green for positive implicit reward, red for negative, alpha by magnitude (pure)."""
    alpha = min(1.0, abs(value) / scale) * 0.8 if scale > 0 else 0.0
    return f"rgba(22,163,74,{alpha:.2f})" if value >= 0 else f"rgba(220,38,38,{alpha:.2f})"


def heatmap(policy, reference, pair, tokenizer, *, beta: float, prompt: str) -> dict:
    from training.engine.lm.collate import PackingCollator
    from training.engine.lm.logps import token_rewards

    collator = PackingCollator(tokenizer.pad_token_id or 0, None)
    chosen, rejected = token_rewards(policy, reference, pair, collator, beta=beta)
    sides = []
    for label, ids, rewards in (
        ("chosen", pair.chosen_ids, chosen),
        ("rejected", pair.rejected_ids, rejected),
    ):
        values = rewards.tolist()[: len(ids)]
        scale = max((abs(v) for v in values), default=0.0)
        tokens = [
            {"text": tokenizer.decode([i]), "reward": v, "color": reward_color(v, scale)}
            for i, v in zip(ids, values, strict=False)
        ]
        sides.append({"label": label, "tokens": tokens, "total": sum(values)})
    return {"prompt": prompt, "sides": sides}


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def evaluation_run(
    *,
    job,
    trained_folder: Path,
    implicit_accuracy: float | None = None,
    implicit_margin: float | None = None,
    on_progress=None,
) -> dict:
    """Compare the base model with the trained one on held-out pairs and prompts; write the report.
    ``on_progress(done, total)`` follows the generations (each model answers each prompt)."""
    from training.engine.lm.data import read_rows, tokenize_rows
    from training.engine.lm.generate import GenerationConfig, generate
    from training.engine.lm.models import load_model, load_tokenizer

    config = job.config
    rows = read_rows(config["eval_file"] or config["train_file"], None if config["eval_file"] else "test")
    tokenizer = load_tokenizer(config["model"])
    pairs, _ = tokenize_rows(rows[:MAX_PAIRS], tokenizer, max_length=config.get("max_length"))
    base, trained = load_model(config["model"]), load_model(f"local:{trained_folder}")
    prompts = [row["prompt"] for row in rows[: job.eval_generations]]
    settings = GenerationConfig(max_new_tokens=48)
    total = 2 * len(prompts)
    answers = {"done": 0}

    def answered(model) -> list[str]:
        texts = []
        for prompt in prompts:
            texts += generate(model, tokenizer, [prompt], settings)
            answers["done"] += 1
            if on_progress is not None:
                on_progress(answers["done"], total)
        return texts

    if on_progress is not None:
        on_progress(0, total)
    report = {
        "pairs": len(pairs),
        "generations_asked": job.eval_generations,
        "accuracy_before": preference_accuracy(base, pairs),
        "accuracy_after": preference_accuracy(trained, pairs),
        "implicit_accuracy": implicit_accuracy,
        "implicit_margin": implicit_margin,
        "generations": [
            {"prompt": _prompt_text(p), "base": b, "trained": t}
            for p, b, t in zip(
                prompts,
                answered(base),
                answered(trained),
                strict=True,
            )
        ],
        "heatmap": heatmap(
            trained,
            base,
            pairs[0],
            tokenizer,
            beta=config["beta"],
            prompt=_prompt_text(rows[pairs[0].index]["prompt"]),
        )
        if pairs
        else None,
    }
    (job_dir(job) / REPORT).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    samples = "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in report["generations"])
    (job_dir(job) / "samples.jsonl").write_text(samples, encoding="utf-8")
    return report


def _sample_folders(job) -> dict[int, Path]:
    root = job_dir(job) / SAMPLES_FOLDER
    found = {}
    for child in root.iterdir() if root.is_dir() else []:
        if (match := SAMPLE_STEP.fullmatch(child.name)) and (child / "samples.json").is_file():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def _samples_of(folder: Path) -> list[dict]:
    data = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    return [s for s in data.get("samples", []) if SAMPLE_FILE.fullmatch(str(s.get("file", "")))]


def mean_pixel(path: Path) -> float:
    """Mean grey level of an image in [0, 1] (the "more ink" statistic of the digits reproduction)."""
    from PIL import Image

    with Image.open(path) as image:
        grey = image.convert("L")
        histogram = grey.histogram()
    total = sum(histogram)
    return sum(level * count for level, count in enumerate(histogram)) / (255 * total) if total else 0.0


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def diffusion_evaluation_run(*, job, eval_metrics: dict[str, float]) -> dict:
    """The diffusion job's report from what its run wrote: the base's samples (step 0) beside the trained
    model's (the last step) per caption and seed, with their mean pixel value, and the held-out implicit
    accuracy before (0.5 by definition: the base is its own reference) and after (``eval/implicit_acc``),
    and the held-out denoising errors of winners and losers before (the reference's) and after."""
    folders = _sample_folders(job)
    base_step, trained_step = (min(folders), max(folders)) if folders else (None, None)
    rows = []
    if folders:
        base, trained = _samples_of(folders[base_step]), _samples_of(folders[trained_step])
        for b, t in zip(base, trained, strict=False):
            rows.append(
                {
                    "caption": str(t.get("caption") or ""),
                    "seed": t.get("seed"),
                    "base": b["file"],
                    "trained": t["file"],
                    "base_mean": mean_pixel(folders[base_step] / b["file"]),
                    "trained_mean": mean_pixel(folders[trained_step] / t["file"]),
                }
            )
    after = eval_metrics.get("eval/implicit_acc")
    report = {
        "kind": "diffusion",
        "base_step": base_step,
        "trained_step": trained_step,
        "samples": rows,
        "implicit_accuracy_before": 0.5 if after is not None else None,
        "implicit_accuracy_after": after,
        "mse": {
            "base": {
                "winner": eval_metrics.get("eval/mse/ref_winner"),
                "loser": eval_metrics.get("eval/mse/ref_loser"),
            },
            "trained": {
                "winner": eval_metrics.get("eval/mse/winner"),
                "loser": eval_metrics.get("eval/mse/loser"),
            },
        },
        "mean_pixel": {
            "base": _mean([r["base_mean"] for r in rows]),
            "trained": _mean([r["trained_mean"] for r in rows]),
        },
    }
    (job_dir(job) / REPORT).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return report


def _summary(rows: list[dict]) -> dict:
    scores = [r["score"] for r in rows if r["score"] is not None]
    kls = [r["kl"] for r in rows if r["kl"] is not None]
    lengths = [r["length"] for r in rows if r["length"] is not None]
    ended = [float(r["ended"]) for r in rows if r["ended"] is not None]
    return {"score": _mean(scores), "kl": _mean(kls), "length": _mean(lengths), "eos_rate": _mean(ended)}


def _win_rate(pairs: list[dict]) -> float | None:
    """Share of prompts whose trained response the reward model scores above the base's (ties ½)."""
    scored = [(p["base_score"], p["trained_score"]) for p in pairs]
    scored = [(b, t) for b, t in scored if b is not None and t is not None]
    return _mean([1.0 if t > b else 0.5 if t == b else 0.0 for b, t in scored])


def policy_evaluation_run(*, job) -> dict:
    """The PPO/RTO job's report from what its run wrote: the greedy held-out generations of the base
    policy (``samples/step-0/generations.json``) beside the last evaluation's, prompt by prompt, with their
    reward-model scores and KL to the reference; means, the win rate against the base as judged by the
    reward model, and the score distributions (a histogram)."""
    base, trained = held_out_generations(job=job)
    base_rows, trained_rows = (base[1] if base else []), (trained[1] if trained else [])
    by_prompt = {row["prompt"]: row for row in base_rows}
    pairs = [
        {
            "prompt": t["prompt"],
            "base": by_prompt[t["prompt"]]["response"],
            "trained": t["response"],
            "base_score": by_prompt[t["prompt"]]["score"],
            "trained_score": t["score"],
            "base_kl": by_prompt[t["prompt"]]["kl"],
            "trained_kl": t["kl"],
        }
        for t in trained_rows
        if t["prompt"] in by_prompt
    ]
    report = {
        "kind": "policy",
        "base_step": base[0] if base else None,
        "trained_step": trained[0] if trained else None,
        "generations": pairs,
        "summary": {"base": _summary(base_rows), "trained": _summary(trained_rows)},
        "win_rate": _win_rate(pairs),
        "histogram": score_histogram(
            base=[r["score"] for r in base_rows if r["score"] is not None],
            trained=[r["score"] for r in trained_rows if r["score"] is not None],
        ),
    }
    (job_dir(job) / REPORT).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return report
