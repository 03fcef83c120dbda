"""What a loop's page shows across rounds: one timeline row per round and the chart series (round 0 is the
starting policy's baseline evaluation)."""

from .models import Loop, LoopRound, LoopStage

STAGES = [
    LoopStage.GENERATE,
    LoopStage.LABEL,
    LoopStage.FREEZE,
    LoopStage.TRAIN,
    LoopStage.EVALUATE,
]

CHARTS = (
    ("mean_score", "Held-out reward-model score (mean)"),
    ("win_rate", "Win rate against the starting policy"),
    ("mean_kl", "KL to the starting policy (mean)"),
    ("mean_length", "Response length (tokens, mean)"),
)


def round_rows(loop: Loop, rounds: list[LoopRound]) -> list[dict]:
    """Each round with its stages marked done, current or to come (a finished loop has no current stage)."""
    rows = []
    for one in rounds:
        at = STAGES.index(one.stage) if one.stage in STAGES else len(STAGES)
        running = not loop.finished and one.stage != LoopStage.DONE
        stages = [
            {
                "name": stage.value,
                "label": stage.label,
                "state": "done"
                if i < at
                else "current"
                if i == at and running
                else "stopped"
                if i == at
                else "todo",
            }
            for i, stage in enumerate(STAGES)
        ]
        rows.append(
            {
                "round": one,
                "stages": stages,
                "labelling": one.labelling,
                "acceptance_rate": (one.labelling or {}).get("rso/acceptance_rate"),
                "consistency": (one.labelling or {}).get("cream/consistency"),
                "waiting_for_people": one.stage == LoopStage.LABEL
                and "judgments_needed" in (one.labelling or {})
                and "pairs" not in (one.labelling or {}),
                "evaluation": one.evaluation,
            }
        )
    return rows


def loop_chart_data(loop: Loop, rounds: list[LoopRound]) -> dict:
    """``{"charts": [{"key", "title", "x", "y"}], "labelling": [...]}``: the held-out figures per round
    (0 = baseline), and the pairs each round's labeller made (with RSO's acceptance rate, CREAM's mean
    consistency C and, for rounds people labelled, their agreement α and estimated flip rate, on the right
    axis)."""
    baseline = (loop.result or {}).get("baseline")
    evaluated = [(r.number, r.evaluation) for r in rounds if r.evaluation]
    points = ([(0, baseline)] if baseline else []) + evaluated
    charts = []
    for key, title in CHARTS:
        series = [(n, e.get(key)) for n, e in points if e.get(key) is not None]
        if key == "win_rate" and baseline:
            series = [(0, 0.5)] + series  # the starting policy against itself: every prompt a tie
        charts.append({"key": key, "title": title, "x": [n for n, _ in series], "y": [v for _, v in series]})
    labelled = [r for r in rounds if r.labelling]
    labelling = {
        "x": [r.number for r in labelled],
        "pairs": [r.labelling.get("pairs") for r in labelled],
        "acceptance": [r.labelling.get("rso/acceptance_rate") for r in labelled],
        "consistency": [r.labelling.get("cream/consistency") for r in labelled],
        "agreement": [r.labelling.get("agreement_alpha") for r in labelled],
        "flip_rate": [r.labelling.get("label_flip_rate") for r in labelled],
        "candidate_score": [r.labelling.get("mean_candidate_score") for r in labelled],
    }
    return {"charts": charts, "labelling": labelling}
