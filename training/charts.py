"""Chart specs as pure functions of plain data: which panels a job page shows, smoothing, config diffs."""

import math

PANELS = [
    ("loss", "Loss", ["loss"]),
    ("rewards", "Rewards (chosen vs rejected)", ["rewards/chosen", "rewards/rejected"]),
    ("margins", "Reward margins", ["rewards/margins"]),
    ("accuracies", "Reward accuracies", ["rewards/accuracies"]),
    ("logps", "Log-probs (chosen vs rejected)", ["logps/chosen", "logps/rejected"]),
    ("grad_norm", "Gradient norm", ["grad_norm"]),
    ("learning_rate", "Learning rate", ["learning_rate"]),
    ("eval", "Held-out (eval/…)", ["eval/loss", "eval/rewards/accuracies", "eval/rewards/margins"]),
]


DIFFUSION_PANELS = [
    ("loss", "Loss", ["loss"]),
    ("implicit_acc", "Implicit accuracy", ["implicit_acc"]),
    (
        "mse",
        "Denoising error (model vs reference)",
        ["mse/winner", "mse/loser", "mse/ref_winner", "mse/ref_loser"],
    ),
    ("inner", "Inner margin", ["inner"]),
    ("grad_norm", "Gradient norm", ["grad_norm"]),
    ("learning_rate", "Learning rate", ["learning_rate"]),
    ("throughput", "Throughput (pairs/s)", ["throughput/pairs_per_s"]),
    ("eval", "Held-out loss and implicit accuracy", ["eval/loss", "eval/implicit_acc"]),
    ("eval_mse", "Held-out denoising error", ["eval/mse/winner", "eval/mse/loser"]),
]
"""A Diffusion-DPO job's panels (its metrics: ``objectives/diffusion.py``)."""


REWARD_MODEL_PANELS = [
    ("loss", "Loss", ["loss"]),
    ("accuracy", "Accuracy (r_chosen > r_rejected)", ["accuracy"]),
    ("margin", "Reward margin", ["margin"]),
    ("rewards", "Rewards (chosen vs rejected, mean)", ["rewards/chosen_mean", "rewards/rejected_mean"]),
    ("spread", "Reward spread (std)", ["rewards/chosen_std", "rewards/rejected_std"]),
    ("grad_norm", "Gradient norm", ["grad_norm"]),
    ("learning_rate", "Learning rate", ["learning_rate"]),
    ("eval", "Held-out (eval/…)", ["eval/loss", "eval/accuracy", "eval/margin"]),
]
"""A reward-model job's panels (its metrics: ``objectives/reward.py``)."""


PANELS_BY_KIND = {"diffusion": DIFFUSION_PANELS, "reward_model": REWARD_MODEL_PANELS}


def chart_panels(*, model_kind: str = "causal_lm") -> list[dict]:
    """The job page's panels for a job training a ``model_kind``: ``[{"id", "title", "metrics"}]`` (the
    page draws one plotly chart each)."""
    panels = PANELS_BY_KIND.get(model_kind, PANELS)
    return [{"id": pid, "title": title, "metrics": metrics} for pid, title, metrics in panels]


def ema(values: list[float | None], weight: float) -> list[float | None]:
    """TensorBoard-style exponential moving average (debiased); ``weight`` 0 = raw. None/NaN pass through."""
    out, last, count = [], 0.0, 0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight**count) if weight > 0 else value)
    return out


def flat(config: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


def config_differences(configs: dict[int, dict], *, ignore=("output_dir", "train_file")) -> dict[str, dict]:
    """Fields whose values differ between runs: ``{field: {job_id: value}}`` (per-run paths left out)."""
    flats = {job_id: flat(config) for job_id, config in configs.items()}
    keys = sorted({k for config in flats.values() for k in config} - set(ignore))
    return {
        key: {job_id: config.get(key) for job_id, config in flats.items()}
        for key in keys
        if len({repr(config.get(key)) for config in flats.values()}) > 1
    }


def compare_series(points_by_job: dict[int, list], *, labels: dict[int, str]) -> list[dict]:
    """Plotly traces for one metric across runs: ``points_by_job[job] = [[step, value, wall], ...]``."""
    return [
        {
            "type": "scatter",
            "mode": "lines",
            "name": labels[job_id],
            "x": [p[0] for p in points],
            "y": [p[1] for p in points],
        }
        for job_id, points in points_by_job.items()
    ]


COMPARISON_SPLITS = (("in_distribution", "in-distribution"), ("shifted", "shifted"))
COMPARISON_SIDES = (("dpo", "DPO implicit reward"), ("reward_model", "Reward model"))


def reward_comparison_bars(result: dict) -> list[dict]:
    """Plotly bar traces of a DPO vs reward-model comparison: one trace per side, accuracy per split."""
    return [
        {
            "type": "bar",
            "name": label,
            "x": [split_label for _, split_label in COMPARISON_SPLITS],
            "y": [(result.get(split) or {}).get(side, {}).get("accuracy") for split, _ in COMPARISON_SPLITS],
        }
        for side, label in COMPARISON_SIDES
    ]
