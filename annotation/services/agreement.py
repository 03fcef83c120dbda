"""Inter-annotator agreement over pairwise votes: pure functions of plain data, plus one loader.

The unit is a task. Each human annotator's current (non-superseded) pairwise judgment is one
categorical vote in {a, b, tie, both_bad}. ``votes`` below is always ``{task_id: {annotator_id: choice}}``.
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

import krippendorff
import numpy as np

CATEGORIES = ("a", "b", "tie", "both_bad")
BINARY = ("a", "b")

Votes = dict[int, dict[int, str]]


def krippendorff_alpha(votes: Votes) -> float | None:
    """Nominal Krippendorff's alpha; None when fewer than two votes share a task or only one value occurs."""
    units = [task_votes for task_votes in votes.values() if len(task_votes) >= 2]
    if not units:
        return None
    annotators = sorted({annotator for task_votes in units for annotator in task_votes})
    row_of = {annotator: i for i, annotator in enumerate(annotators)}
    data = np.full((len(annotators), len(units)), np.nan)
    for column, task_votes in enumerate(units):
        for annotator, choice in task_votes.items():
            data[row_of[annotator], column] = CATEGORIES.index(choice)
    if len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    value = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    return None if math.isnan(value) else float(value)


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels on the same units; None when chance agreement is 1 or no units."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for first, second in pairs if first == second) / n
    first_counts = Counter(first for first, _ in pairs)
    second_counts = Counter(second for _, second in pairs)
    expected = sum(first_counts[label] * second_counts[label] for label in first_counts) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def pairwise_kappas(votes: Votes, *, min_shared: int = 5) -> list[dict]:
    """Cohen's kappa for every annotator pair with at least ``min_shared`` tasks in common."""
    shared: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for task_votes in votes.values():
        for first, second in combinations(sorted(task_votes), 2):
            shared.setdefault((first, second), []).append((task_votes[first], task_votes[second]))
    result = []
    for (first, second), pairs in sorted(shared.items()):
        if len(pairs) >= min_shared:
            agree = sum(1 for x, y in pairs if x == y) / len(pairs)
            result.append(
                {
                    "a": first,
                    "b": second,
                    "shared": len(pairs),
                    "agreement": agree,
                    "kappa": cohen_kappa(pairs),
                }
            )
    return result


def strict_majority(choices: list[str]) -> str | None:
    """The most common choice when it beats every other one; None on a tie for first place or no votes."""
    ranked = Counter(choices).most_common(2)
    if not ranked:
        return None
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def majority_agreement(votes: Votes) -> dict[int, dict]:
    """Each annotator's agreement with the strict majority of the OTHER annotators (leave-one-out)."""
    totals: dict[int, list[int]] = {}
    for task_votes in votes.values():
        for annotator, choice in task_votes.items():
            majority = strict_majority([c for other, c in task_votes.items() if other != annotator])
            if majority is None:
                continue
            counts = totals.setdefault(annotator, [0, 0])
            counts[0] += 1
            counts[1] += int(choice == majority)
    return {
        annotator: {"tasks": tasks, "agree": agree, "rate": agree / tasks}
        for annotator, (tasks, agree) in sorted(totals.items())
    }


def flip_rate(votes: Votes, *, min_pairs: int = 10) -> dict:
    """Estimated label-flip rate epsilon from pairwise disagreement on binary (a/b) votes.

    If every vote flips independently with rate eps, two votes disagree with probability
    d = 2 eps (1 - eps), so eps = (1 - sqrt(1 - 2 d)) / 2 (capped at 0.5 when d >= 0.5).
    """
    pairs = disagreeing = 0
    for task_votes in votes.values():
        binary = [choice for choice in task_votes.values() if choice in BINARY]
        n_a = binary.count("a")
        n_b = len(binary) - n_a
        pairs += len(binary) * (len(binary) - 1) // 2
        disagreeing += n_a * n_b
    if pairs < max(min_pairs, 1):
        return {"epsilon": None, "pairs": pairs, "disagreement": None}
    d = disagreeing / pairs
    epsilon = 0.5 if d >= 0.5 else (1.0 - math.sqrt(1.0 - 2.0 * d)) / 2.0
    return {"epsilon": epsilon, "pairs": pairs, "disagreement": d}


@dataclass(frozen=True)
class AgreementReport:
    tasks: int
    votes: int
    annotators: dict[int, str]
    alpha: float | None
    kappas: list[dict] = field(default_factory=list)
    majority: dict[int, dict] = field(default_factory=dict)
    flip: dict = field(default_factory=dict)


def agreement_compute(votes: Votes, *, names: dict[int, str], min_shared: int = 5, min_pairs: int = 10):
    """Every agreement figure for one set of votes."""
    return AgreementReport(
        tasks=sum(1 for task_votes in votes.values() if task_votes),
        votes=sum(len(task_votes) for task_votes in votes.values()),
        annotators=names,
        alpha=krippendorff_alpha(votes),
        kappas=pairwise_kappas(votes, min_shared=min_shared),
        majority=majority_agreement(votes),
        flip=flip_rate(votes, min_pairs=min_pairs),
    )


def project_votes(*, project) -> tuple[Votes, dict[int, str]]:
    """Selector: the current human pairwise votes of a project and the annotators' usernames."""
    from django.contrib.auth import get_user_model

    from ..models import Judgment, JudgmentSource

    rows = (
        Judgment.objects.filter(
            task__project=project,
            source=JudgmentSource.HUMAN,
            annotator__isnull=False,
            superseded_by__isnull=True,
            choice__in=CATEGORIES,
        )
        .order_by("id")
        .values_list("task_id", "annotator_id", "choice")
    )
    votes: Votes = {}
    for task_id, annotator_id, choice in rows.iterator(chunk_size=5000):
        votes.setdefault(task_id, {})[annotator_id] = choice
    ids = {annotator for task_votes in votes.values() for annotator in task_votes}
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    return votes, names


def project_agreement(*, project, min_shared: int = 5, min_pairs: int = 10) -> AgreementReport:
    votes, names = project_votes(project=project)
    return agreement_compute(votes, names=names, min_shared=min_shared, min_pairs=min_pairs)


# --- agreement for every task type (rankings, steps, sentences) and gold accuracy ------------------

Labels = dict[int, dict[int, list]]  # {task_id: {annotator_id: [label per step / sentence] or ranking}}


def kendall_tau_b(first: dict[int, int], second: dict[int, int]) -> float | None:
    """Kendall's tau-b between two rankings given as {candidate: position} (equal positions tie)."""
    shared = sorted(set(first) & set(second))
    concordant = discordant = ties_first = ties_second = 0
    for x, y in combinations(shared, 2):
        a, b = first[x] - first[y], second[x] - second[y]
        if a == 0 and b == 0:
            continue
        if a == 0:
            ties_first += 1
        elif b == 0:
            ties_second += 1
        elif (a > 0) == (b > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_first) * (concordant + discordant + ties_second))
    return None if denominator == 0 else (concordant - discordant) / denominator


def _positions(ranking: list) -> dict[int, int]:
    return {
        int(c): i for i, group in enumerate(ranking) for c in (group if isinstance(group, list) else [group])
    }


def ranking_agreement(rankings: Labels) -> dict:
    """Mean Kendall's tau-b over every pair of annotators who ranked the same task."""
    taus = []
    for task_rankings in rankings.values():
        for first, second in combinations(sorted(task_rankings), 2):
            tau = kendall_tau_b(_positions(task_rankings[first]), _positions(task_rankings[second]))
            if tau is not None:
                taus.append(tau)
    return {"tau": sum(taus) / len(taus) if taus else None, "pairs": len(taus)}


def nominal_alpha(units: list[dict[int, str]]) -> float | None:
    """Nominal Krippendorff's alpha over units of any labels; None without overlap or variation."""
    units = [unit for unit in units if len(unit) >= 2]
    values = sorted({label for unit in units for label in unit.values()})
    if not units or len(values) < 2:
        return None
    raters = sorted({rater for unit in units for rater in unit})
    data = np.full((len(raters), len(units)), np.nan)
    for column, unit in enumerate(units):
        for rater, label in unit.items():
            data[raters.index(rater), column] = values.index(label)
    value = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    return None if math.isnan(value) else float(value)


def position_agreement(labels: Labels) -> dict:
    """Per-position agreement (step i / sentence i) over annotator pairs who both labelled it, plus alpha."""
    by_position: dict[int, list[int]] = {}
    units = []
    for _task, task_labels in sorted(labels.items()):
        width = max((len(v) for v in task_labels.values()), default=0)
        for index in range(width):
            unit = {a: str(v[index]) for a, v in task_labels.items() if index < len(v)}
            units.append(unit)
            for first, second in combinations(sorted(unit), 2):
                counts = by_position.setdefault(index, [0, 0])
                counts[0] += 1
                counts[1] += int(unit[first] == unit[second])
    rows = [
        {"position": i + 1, "pairs": n, "agreement": agree / n}
        for i, (n, agree) in sorted(by_position.items())
    ]
    pairs = sum(r["pairs"] for r in rows)
    overall = sum(r["agreement"] * r["pairs"] for r in rows) / pairs if pairs else None
    return {"by_position": rows, "pairs": pairs, "agreement": overall, "alpha": nominal_alpha(units)}


def step_labels_of(step_labels: list | None, first_wrong_step: int | None) -> list[str] | None:
    """A step judgment as labels up to the first wrong step (derived from the index when unlabelled)."""
    if step_labels:
        return [str(label) for label in step_labels]
    if first_wrong_step is not None:
        return ["correct"] * first_wrong_step + ["wrong"]
    return None


def first_wrong_agreement(labels: Labels) -> dict:
    """Share of annotator pairs naming the same first wrong step (or both: none wrong)."""
    pairs = agree = 0
    for task_labels in labels.values():
        firsts = {a: (v.index("wrong") if "wrong" in v else None) for a, v in task_labels.items()}
        for first, second in combinations(sorted(firsts), 2):
            pairs += 1
            agree += int(firsts[first] == firsts[second])
    return {"pairs": pairs, "agreement": agree / pairs if pairs else None}


def project_type_labels(*, project) -> tuple[Labels, Labels, Labels]:
    """Selector: current human rankings, step labels and sentence labels of a project, by task."""
    from ..models import Judgment, JudgmentSource
    from .gold import gold_label

    rows = (
        Judgment.objects.filter(
            task__project=project,
            source=JudgmentSource.HUMAN,
            annotator__isnull=False,
            superseded_by__isnull=True,
        )
        .order_by("id")
        .values_list(
            "task_id", "annotator_id", "ranking", "step_labels", "first_wrong_step", "sentence_labels"
        )
    )
    rankings: Labels = {}
    steps: Labels = {}
    sentences: Labels = {}
    for task_id, annotator_id, ranking, step_labels, first_wrong, sentence_labels in rows.iterator(2000):
        if ranking:
            rankings.setdefault(task_id, {})[annotator_id] = ranking
        if (labels := step_labels_of(step_labels, first_wrong)) is not None:
            steps.setdefault(task_id, {})[annotator_id] = labels
        if sentence_labels:
            sentences.setdefault(task_id, {})[annotator_id] = [gold_label(v) for v in sentence_labels]
    return rankings, steps, sentences


def project_type_agreement(*, project) -> dict:
    """Ranking tau, per-step and per-sentence agreement, and gold accuracy per annotator (with names)."""
    from django.contrib.auth import get_user_model

    from .gold import gold_accuracy, gold_flip_rate, project_gold_results

    rankings, steps, sentences = project_type_labels(project=project)
    accuracy = gold_accuracy(project_gold_results(project=project))
    names = dict(get_user_model().objects.filter(pk__in=accuracy).values_list("pk", "username"))
    gold = [
        {"name": names.get(pk, str(pk)), **row, "percent": round(100 * row["accuracy"], 1)}
        for pk, row in accuracy.items()
    ]
    return {
        "ranking": ranking_agreement(rankings) if rankings else None,
        "steps": {**position_agreement(steps), "first_wrong": first_wrong_agreement(steps)}
        if steps
        else None,
        "sentences": position_agreement(sentences) if sentences else None,
        "gold": gold,
        "gold_flip": gold_flip_rate(accuracy),
    }
