"""After a run: held-out accuracy before/after, base vs trained generations, per-token reward heatmap.

Computed once by the worker when a job succeeds and stored as ``eval_report.json`` in its folder."""

import json
from pathlib import Path

from .paths import job_dir

REPORT = "eval_report.json"
MAX_PAIRS = 32
MAX_PROMPTS = 4


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


def evaluation_run(*, job, trained_folder: Path, implicit_accuracy: float | None = None) -> dict:
    """Compare the base model with the trained one on held-out pairs and prompts; write the report."""
    from training.engine.lm.data import read_rows, tokenize_rows
    from training.engine.lm.generate import GenerationConfig, generate
    from training.engine.lm.models import load_model, load_tokenizer

    config = job.config
    rows = read_rows(config["eval_file"] or config["train_file"], None if config["eval_file"] else "test")
    tokenizer = load_tokenizer(config["model"])
    pairs, _ = tokenize_rows(rows[:MAX_PAIRS], tokenizer, max_length=config.get("max_length"))
    base, trained = load_model(config["model"]), load_model(f"local:{trained_folder}")
    prompts = [row["prompt"] for row in rows[:MAX_PROMPTS]]
    settings = GenerationConfig(max_new_tokens=48)
    report = {
        "pairs": len(pairs),
        "accuracy_before": preference_accuracy(base, pairs),
        "accuracy_after": preference_accuracy(trained, pairs),
        "implicit_accuracy": implicit_accuracy,
        "generations": [
            {"prompt": _prompt_text(p), "base": b, "trained": t}
            for p, b, t in zip(
                prompts,
                generate(base, tokenizer, prompts, settings),
                generate(trained, tokenizer, prompts, settings),
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
