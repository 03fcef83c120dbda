"""Gold items (attention checks): a manager records the expected judgment; annotators are scored on it.

``Item.gold_payload`` (normalised by ``item_gold_mark``), keyed by what the project's tasks ask for:

* ``{"ranking": [[id], [id, id], ...]}`` — the item's candidates best first, a group is a tie; a pair task
  is expected to choose the better one (``tie`` for equals). Pairwise, ranking, multi-image, image pair
  and step-wise pair tasks.
* ``{"first_wrong_step": {"<candidate id>": index | null}}`` — step-wise single-response tasks
  (null: every step is correct).
* ``{"sentence_labels": {"<candidate id>": ["factual" | "hallucinated" | "not_claim", ...]}}``.

Gold tasks are served silently at ``Project.gold_rate`` by ``assignment_take_next``; each annotator's
score on them gives their gold accuracy, and the share of binary gold pair votes they got wrong is a
direct estimate of the label-flip rate.
"""

from collections.abc import Iterable
from itertools import combinations

from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef

from ..models import Assignment, AssignmentState, Item, Judgment, JudgmentSource, Project, Task
from .version_rows import is_factual

GOLD_RATE_MAX = 0.5
GOLD_LABELS = ("factual", "hallucinated", "not_claim")
_LABEL_ALIASES = {"no_claim": "not_claim", "x": "not_claim", "f": "factual", "h": "hallucinated"}


def project_gold_rate_set(*, project: Project, rate: float) -> Project:
    """Set the share of served tasks that are gold (0 turns gold serving off)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= GOLD_RATE_MAX:
        raise ValidationError(
            {"gold_rate": f"The gold rate is a number from 0 to {GOLD_RATE_MAX}, not {rate!r}."}
        )
    project.gold_rate = float(rate)
    project.save(update_fields=["gold_rate"])
    return project


def gold_label(value) -> str:
    """A sentence label as one of GOLD_LABELS (booleans and imported words are accepted)."""
    if isinstance(value, dict):
        value = value.get("label")
    text = str(value).strip().lower()
    text = _LABEL_ALIASES.get(text, text)
    if text in GOLD_LABELS:
        return text
    return "factual" if is_factual(value) else "hallucinated"


def _ranking(raw, ids: set[int]) -> list[list[int]]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError({"ranking": "Give the responses best first (groups are ties)."})
    groups = [[int(c) for c in (g if isinstance(g, list) else [g])] for g in raw]
    flat = [c for g in groups for c in g]
    if len(flat) != len(set(flat)) or set(flat) != ids:
        raise ValidationError(
            {"ranking": f"Rank every response of the item exactly once ({len(ids)} responses)."}
        )
    return groups


def _steps(raw: dict, candidates: dict[int, object]) -> dict[str, int | None]:
    out = {}
    for key, index in raw.items():
        candidate = candidates.get(int(key))
        if candidate is None:
            raise ValidationError({"first_wrong_step": f"Response {key} is not a response of this item."})
        n_steps = len(candidate.steps or [candidate.text])
        if index is not None and (type(index) is not int or not 0 <= index < n_steps):
            raise ValidationError(
                {"first_wrong_step": f"Response {candidate.position + 1}: the wrong step is 1 to {n_steps}."}
            )
        out[str(int(key))] = index
    return out


def _sentences(raw: dict, candidates: dict[int, object]) -> dict[str, list[str]]:
    from .judgment_payloads import candidate_sentences

    out = {}
    for key, labels in raw.items():
        candidate = candidates.get(int(key))
        if candidate is None:
            raise ValidationError({"sentence_labels": f"Response {key} is not a response of this item."})
        n = len(candidate_sentences(sentences=candidate.sentences, text=candidate.text))
        if not isinstance(labels, list) or len(labels) != n:
            raise ValidationError(
                {"sentence_labels": f"Response {candidate.position + 1}: give {n} labels, one per sentence."}
            )
        out[str(int(key))] = [gold_label(label) for label in labels]
    return out


def item_gold_mark(*, item: Item, payload: dict) -> Item:
    """Mark an item gold with its expected judgment (validated against the item's candidates)."""
    candidates = {c.pk: c for c in item.candidates.all()}
    normal = {}
    if payload.get("ranking") is not None:
        normal["ranking"] = _ranking(payload["ranking"], set(candidates))
    if payload.get("first_wrong_step"):
        normal["first_wrong_step"] = _steps(payload["first_wrong_step"], candidates)
    if payload.get("sentence_labels"):
        normal["sentence_labels"] = _sentences(payload["sentence_labels"], candidates)
    if not normal:
        raise ValidationError("Say what the expected judgment is before marking the item gold.")
    item.is_gold, item.gold_payload = True, normal
    item.save(update_fields=["is_gold", "gold_payload"])
    return item


def item_gold_unmark(*, item: Item) -> Item:
    item.is_gold, item.gold_payload = False, None
    item.save(update_fields=["is_gold", "gold_payload"])
    return item


def gold_task_lock(*, project: Project, annotator, now) -> Task | None:
    """Lock a gold task the annotator has not finished; gold tasks are for everyone (overlap ignored)."""
    own_final = Assignment.objects.filter(task=OuterRef("pk"), annotator=annotator).exclude(
        state=AssignmentState.ACTIVE, expires_at__lte=now
    )
    return (
        Task.objects.filter(project=project, item__is_gold=True)
        .exclude(Exists(own_final))
        .order_by("id")
        .select_for_update(skip_locked=True, of=("self",))
        .first()
    )


# --- scoring: pure ---------------------------------------------------------------------------------


def _position(ranking: list[list[int]]) -> dict[int, int]:
    return {c: i for i, group in enumerate(ranking) for c in group}


def expected_choice(ranking: list[list[int]], candidate_ids: list[int]) -> str | None:
    pos = _position(ranking)
    first, second = candidate_ids
    if first not in pos or second not in pos:
        return None
    return "a" if pos[first] < pos[second] else "b" if pos[first] > pos[second] else "tie"


def ranking_concordance(gold: list[list[int]], given: list) -> float | None:
    """Share of the gold's strictly ordered pairs the given ranking orders the same way (a tie: half)."""
    gold_pos = _position(gold)
    given_pos = _position([g if isinstance(g, list) else [g] for g in given])
    scores = []
    for x, y in combinations(sorted(gold_pos), 2):
        if gold_pos[x] == gold_pos[y] or x not in given_pos or y not in given_pos:
            continue
        same = (gold_pos[x] - gold_pos[y]) * (given_pos[x] - given_pos[y])
        scores.append(1.0 if same > 0 else 0.5 if same == 0 else 0.0)
    return sum(scores) / len(scores) if scores else None


def gold_score(payload: dict, candidate_ids: list[int], judgment: dict) -> float | None:
    """How well one judgment matches the gold (0..1), or None when the gold says nothing about it."""
    ranking = payload.get("ranking")
    if len(candidate_ids) == 2 and ranking and judgment.get("choice"):
        expected = expected_choice(ranking, candidate_ids)
        return None if expected is None else float(judgment["choice"] == expected)
    if ranking and judgment.get("ranking"):
        return ranking_concordance(ranking, judgment["ranking"])
    key = str(candidate_ids[0]) if len(candidate_ids) == 1 else None
    steps = payload.get("first_wrong_step") or {}
    if key in steps and judgment.get("step_labels") is not None:
        return float(judgment.get("first_wrong_step") == steps[key])
    labels = (payload.get("sentence_labels") or {}).get(key)
    given = judgment.get("sentence_labels")
    if labels and given:
        pairs = list(zip(labels, given, strict=False))
        return sum(gold_label(g) == e for e, g in pairs) / len(labels)
    return None


def gold_accuracy(results: Iterable[tuple[int, float, bool | None]]) -> dict[int, dict]:
    """Per annotator: gold judgments scored, mean score (accuracy) and binary pair errors."""
    out: dict[int, dict] = {}
    for annotator, score, binary_wrong in results:
        row = out.setdefault(annotator, {"gold": 0, "score": 0.0, "binary": 0, "binary_wrong": 0})
        row["gold"] += 1
        row["score"] += score
        if binary_wrong is not None:
            row["binary"] += 1
            row["binary_wrong"] += int(binary_wrong)
    for row in out.values():
        row["accuracy"] = row["score"] / row["gold"]
    return dict(sorted(out.items()))


def gold_flip_rate(accuracy: dict[int, dict]) -> dict:
    """The label-flip rate estimated from gold: wrong binary (a/b) gold pair votes over all of them."""
    n = sum(row["binary"] for row in accuracy.values())
    wrong = sum(row["binary_wrong"] for row in accuracy.values())
    return {"epsilon": wrong / n if n else None, "votes": n}


# --- loader ----------------------------------------------------------------------------------------

JUDGMENT_FIELDS = ("choice", "ranking", "step_labels", "first_wrong_step", "sentence_labels")


def project_gold_results(*, project: Project) -> list[tuple[int, float, bool | None]]:
    """Selector: (annotator, score, binary pair vote wrong?) for every current human judgment on gold."""
    rows = (
        Judgment.objects.filter(
            task__project=project,
            task__item__is_gold=True,
            source=JudgmentSource.HUMAN,
            annotator__isnull=False,
            superseded_by__isnull=True,
        )
        .order_by("id")
        .values("annotator_id", "task__candidate_ids", "task__item__gold_payload", *JUDGMENT_FIELDS)
    )
    results = []
    for row in rows.iterator(chunk_size=2000):
        payload, ids = row["task__item__gold_payload"] or {}, row["task__candidate_ids"]
        score = gold_score(payload, ids, row)
        if score is None:
            continue
        binary = None
        if len(ids) == 2 and row["choice"] in ("a", "b") and payload.get("ranking"):
            expected = expected_choice(payload["ranking"], ids)
            binary = row["choice"] != expected if expected in ("a", "b") else None
        results.append((row["annotator_id"], score, binary))
    return results


def gold_stats(*, project: Project) -> dict:
    """Gold figures stored with a frozen version: the flip rate measured on gold and accuracy by annotator."""
    from django.contrib.auth import get_user_model

    accuracy = gold_accuracy(project_gold_results(project=project))
    names = dict(get_user_model().objects.filter(pk__in=accuracy).values_list("pk", "username"))
    flip = gold_flip_rate(accuracy)
    return {
        "label_flip_rate_gold": flip["epsilon"],
        "label_flip_gold_votes": flip["votes"],
        "gold_accuracy": {names.get(pk, str(pk)): round(row["accuracy"], 4) for pk, row in accuracy.items()},
    }
