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


PPO_PANELS = [
    ("scores", "Reward-model score and RLHF reward", ["objective/scores", "objective/rlhf_reward"]),
    ("kl", "KL to the reference (per response)", ["objective/kl"]),
    ("non_score", "Non-score reward (KL penalty)", ["objective/non_score_reward"]),
    ("kl_coef", "KL coefficient β_kl", ["objective/kl_coef"]),
    ("entropy", "Entropy (rollouts vs updates)", ["objective/entropy", "policy/entropy_avg"]),
    ("policy", "Policy: approx. KL and clip fraction", ["policy/approxkl_avg", "policy/clipfrac_avg"]),
    ("loss", "Loss (total, policy, value)", ["loss", "loss/policy_avg", "loss/value_avg"]),
    ("val", "Value clip fraction and policy ratio", ["val/clipfrac_avg", "val/ratio"]),
    ("eos", "Responses: EOS count and length", ["val/num_eos_tokens", "val/response_length"]),
    (
        "throughput",
        "Throughput (tokens/s)",
        ["throughput/rollout_tokens_per_s", "throughput/update_tokens_per_s"],
    ),
    ("grad_norm", "Gradient norm", ["grad_norm"]),
    ("learning_rate", "Learning rate", ["learning_rate"]),
    ("eval", "Held-out score and KL (eval/…)", ["eval/objective/scores", "eval/objective/kl"]),
    ("eval_length", "Held-out length and EOS rate", ["eval/response_length", "eval/eos_rate"]),
]
"""A PPO job's panels (TRL's PPO names: ``recipes/ppo.py``)."""

RTO_PANELS = [
    (
        "scores",
        "Reward-model score, dense DPO reward, RLHF reward",
        ["objective/scores", "objective/dense_reward", "objective/rlhf_reward"],
    ),
    *PPO_PANELS[1:],
]
"""An RTO job's panels: PPO's, with the DPO model's dense token reward beside the score."""

PANELS_BY_METHOD = {"ppo": PPO_PANELS, "rto": RTO_PANELS}


def chart_panels(*, model_kind: str = "causal_lm", method: str | None = None) -> list[dict]:
    """The job page's panels for a job of ``method`` training a ``model_kind``: ``[{"id", "title",
    "metrics"}]`` (the page draws one plotly chart each).  A method with panels of its own (PPO, RTO)
    gets those; any other the panels of its model kind."""
    panels = PANELS_BY_METHOD.get(method) or PANELS_BY_KIND.get(model_kind, PANELS)
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


class _NotAField:
    """A config field another run's method does not have (shown as such, compared unequal to any value)."""

    def __repr__(self) -> str:
        return "<not a field>"

    def __str__(self) -> str:
        return "— (not a field of this method)"


NOT_A_FIELD = _NotAField()
SERVER_PATHS = ("output_dir", "train_file", "eval_file", "ref_cache_dir", "encode_cache_dir")
"""Config fields the server sets to paths: not differences a user chose."""


def config_differences(configs: dict[int, dict], *, ignore=SERVER_PATHS) -> dict[str, dict]:
    """Fields whose values differ between runs: ``{field: {job_id: value}}`` (server paths left out); a
    run whose method has no such field gets ``NOT_A_FIELD``."""
    flats = {job_id: flat(config) for job_id, config in configs.items()}
    keys = sorted({k for config in flats.values() for k in config} - set(ignore))
    return {
        key: {job_id: config.get(key, NOT_A_FIELD) for job_id, config in flats.items()}
        for key in keys
        if len({repr(config.get(key, NOT_A_FIELD)) for config in flats.values()}) > 1
    }


def difference_rows(diffs: dict[str, dict], job_ids: list[int]) -> list[dict]:
    """``config_differences`` as table rows: ``{"field", "cells": [value per job, in job_ids order]}``."""
    return [
        {"field": key, "cells": [values.get(j, NOT_A_FIELD) for j in job_ids]}
        for key, values in diffs.items()
    ]


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


COUNTERPARTS = [
    (
        "reward",
        "Reward: PPO's scores vs DPO's margins",
        ["objective/scores", "objective/rlhf_reward"],
        ["rewards/margins"],
    ),
    (
        "heldout",
        "Held-out: PPO's scores vs DPO's margins and accuracy",
        ["eval/objective/scores"],
        ["eval/rewards/margins", "eval/rewards/accuracies"],
    ),
    (
        "kl",
        "Drift from the reference: PPO's KL vs DPO's implicit rewards",
        ["objective/kl", "eval/objective/kl"],
        ["rewards/chosen", "rewards/rejected"],
    ),
    ("loss", "Loss", ["loss"], ["loss"]),
]
"""``(id, title, PPO-family metrics, DPO-family metrics)``: one quantity's counterparts in the two families,
drawn in one panel with PPO's on the left axis and DPO's on the right (their scales differ)."""


def counterpart_metrics() -> list[str]:
    """Every metric some counterpart panel draws."""
    return sorted({name for _, _, ppo, dpo in COUNTERPARTS for name in ppo + dpo})


def counterpart_panels(
    points: dict[int, dict[str, list]], *, families: dict[int, str], labels: dict[int, str]
) -> list[dict]:
    """Plotly panels of ``COUNTERPARTS``: ``points[job][metric] = [[step, value, wall], ...]``,
    ``families[job]`` is ``"ppo"`` or ``"dpo"``; a trace per job and metric that has points, named
    "<label> · <metric>"."""
    panels = []
    for panel_id, title, ppo_names, dpo_names in COUNTERPARTS:
        traces = []
        for job_id, family in families.items():
            axis, names = ("y", ppo_names) if family == "ppo" else ("y2", dpo_names)
            for name in names:
                series = points.get(job_id, {}).get(name) or []
                if not series:
                    continue
                traces.append(
                    {
                        "type": "scatter",
                        "mode": "lines+markers",
                        "name": f"{labels[job_id]} · {name}",
                        "x": [p[0] for p in series],
                        "y": [p[1] for p in series],
                        "yaxis": axis,
                    }
                )
        layout = {
            "yaxis": {"title": {"text": "PPO"}},
            "yaxis2": {"title": {"text": "DPO"}, "overlaying": "y", "side": "right"},
        }
        panels.append({"id": panel_id, "title": title, "traces": traces, "layout": layout})
    return panels


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


def score_histogram(*, base: list[float], trained: list[float], bins: int = 20) -> list[dict]:
    """Plotly histogram traces of reward-model scores before (the base policy) and after training, on
    the same bins so the two are comparable."""
    values = [*base, *trained]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    size = (high - low) / bins if high > low else 1.0
    xbins = {"start": low, "end": high + size / 2, "size": size}
    return [
        {"type": "histogram", "name": name, "x": scores, "opacity": 0.6, "xbins": xbins}
        for name, scores in (("base", base), ("trained", trained))
    ]
