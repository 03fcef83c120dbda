"""Freezing a project's judgments into an immutable, numbered DatasetVersion."""

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from django.db import connection, transaction
from django.db.models import Max

from ..models import (
    Candidate,
    DatasetExample,
    DatasetVersion,
    Item,
    ItemImage,
    Judgment,
    JudgmentSource,
    Project,
    Task,
    TaskType,
)
from . import version_rows as vr
from .agreement import CATEGORIES, flip_rate, krippendorff_alpha
from .gold import gold_stats

BULK_CHUNK = 2000


class FreezeError(ValueError):
    """The project cannot be frozen under this rule (for example: no row qualifies)."""


@dataclass(frozen=True)
class FreezeRule:
    """How current votes become preference rows."""

    min_votes: int = 1
    """Votes a task needs (an imported judgment is one vote)."""
    min_strength: int | None = None
    """Ignore human votes weaker than this (1–3); imported votes always pass."""
    drop_ties: bool = True
    """Drop tasks whose majority is a tie. TRL text rows cannot hold a tie, so text ties always drop;
    image pairs keep them as ``label_0 = 0.5`` when this is false."""
    drop_both_bad: bool = True
    """Drop tasks whose majority is both-bad; when false, both-bad votes are ignored and the rest decide."""
    min_agreement: float = 0.5
    """The majority's share of the counted votes (the majority must also be strict)."""

    def __post_init__(self):
        if isinstance(self.min_votes, bool) or not isinstance(self.min_votes, int) or self.min_votes < 1:
            raise ValueError(f"min_votes must be an integer of at least 1, not {self.min_votes!r}.")
        if self.min_strength is not None and (
            isinstance(self.min_strength, bool)
            or not isinstance(self.min_strength, int)
            or not 1 <= self.min_strength <= 3
        ):
            raise ValueError(f"min_strength must be 1, 2, 3 or none, not {self.min_strength!r}.")
        for name in ("drop_ties", "drop_both_bad"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}.")
        agreement = self.min_agreement
        if isinstance(agreement, bool) or not isinstance(agreement, int | float) or not 0 <= agreement <= 1:
            raise ValueError(f"min_agreement must be a number from 0 to 1, not {agreement!r}.")

    @classmethod
    def parse(cls, text: str) -> "FreezeRule":
        """``"min_votes=2,min_strength=2,drop_ties=true"`` → FreezeRule; ValueError naming the bad key."""
        known = {f.name for f in fields(cls)}
        values = {}
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            key, sep, raw = (s.strip() for s in part.partition("="))
            if not sep:
                raise ValueError(f"Rule part {part!r} must look like key=value.")
            if key not in known:
                raise ValueError(f"Unknown rule key {key!r}; known keys: {', '.join(sorted(known))}.")
            values[key] = _parse_value(key, raw)
        return cls(**values)


def _parse_value(key: str, raw: str):
    lowered = raw.lower()
    if key in ("drop_ties", "drop_both_bad"):
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} must be true or false, not {raw!r}.")
    if key == "min_strength" and lowered in ("", "none", "null"):
        return None
    try:
        return float(raw) if key == "min_agreement" else int(raw)
    except ValueError:
        kind = "a number" if key == "min_agreement" else "an integer"
        raise ValueError(f"{key} must be {kind}, not {raw!r}.") from None


@dataclass
class ProjectData:
    items: dict[int, dict]
    candidates: dict[int, dict]
    tasks: list[tuple[int, int, list[int]]]
    votes: dict[int, list[vr.Vote]]
    human: dict[int, dict[int, str]]


def project_data_load(*, project: Project) -> ProjectData:
    """Selector: everything a freeze reads, in a fixed number of queries (no per-task queries)."""
    items = {
        row["id"]: {**row, "images": []}
        for row in Item.objects.filter(project=project).values(
            "id", "prompt", "messages", "metadata", "split"
        )
    }
    images = ItemImage.objects.filter(item__project=project).order_by("item_id", "position")
    for item_id, sha, file_name in images.values_list("item_id", "asset__sha256", "asset__file"):
        items[item_id]["images"].append(vr.image_name(sha, file_name))
    candidates = {}
    values = ("id", "item_id", "text", "messages", "sentences", "steps", "asset__sha256", "asset__file")
    for row in Candidate.objects.filter(item__project=project).values(*values).iterator(chunk_size=5000):
        sha, file_name = row.pop("asset__sha256"), row.pop("asset__file")
        candidates[row["id"]] = {**row, "image": vr.image_name(sha, file_name) if sha else None}
    tasks = list(
        Task.objects.filter(project=project)
        .order_by("item_id", "id")
        .values_list("id", "item_id", "candidate_ids")
    )
    votes, human = _current_votes(project)
    return ProjectData(items=items, candidates=candidates, tasks=tasks, votes=votes, human=human)


def _current_votes(project: Project):
    """Newest judgment per (task, human annotator) and every imported judgment, as Votes."""
    rows = (
        Judgment.objects.filter(task__project=project, superseded_by__isnull=True)
        .order_by("id")
        .values_list(
            "id",
            "task_id",
            "annotator_id",
            "source",
            "choice",
            "strength",
            "ranking",
            "sentence_labels",
            "step_labels",
            "corrected_step",
            "ratings",
        )
    )
    keyed: dict[int, dict] = {}
    human: dict[int, dict[int, str]] = {}
    for (
        pk,
        task_id,
        annotator_id,
        source,
        choice,
        strength,
        ranking,
        labels,
        steps,
        fix,
        ratings,
    ) in rows.iterator(chunk_size=5000):
        imported = source == JudgmentSource.IMPORTED or annotator_id is None
        key = ("imported", pk) if imported else ("human", annotator_id)
        keyed.setdefault(task_id, {})[key] = vr.Vote(
            choice, strength, imported, ranking, labels, steps, fix, ratings
        )
        if not imported and choice in CATEGORIES:
            human.setdefault(task_id, {})[annotator_id] = choice
    return {task_id: list(by_key.values()) for task_id, by_key in keyed.items()}, human


def rows_build(*, task_type: str, data: ProjectData, rule: FreezeRule):
    """``([(item_id, row)], dropped: Counter, votes_counted)`` for every task of the project."""
    out, dropped, counted = [], Counter(), 0
    factual: dict[int, list] = {}
    for task_id, item_id, candidate_ids in data.tasks:
        votes = data.votes.get(task_id, [])
        if not rule.drop_both_bad:
            votes = [v for v in votes if v.choice != "both_bad"]
        counted += len(votes)
        item = data.items[item_id]
        candidates = [data.candidates[c] for c in candidate_ids if c in data.candidates]
        if task_type == TaskType.FACTUALITY:
            verdicts, reason = _factuality_verdicts(candidates, votes, rule)
            if reason:
                dropped[reason] += 1
            else:
                factual.setdefault(item_id, []).append((candidates[0], verdicts))
            continue
        if task_type == TaskType.STEPWISE and len(candidates) == 1:  # a labelled solution
            rows, reason = vr.step_label_rows(item, candidates[0], votes, rule)
        elif task_type == TaskType.RANKING:
            rows, reason = vr.ranking_rows(item, candidates, votes, rule)
        else:
            rows, reason = vr.pair_rows(task_type, item, candidates, votes, rule)
        if reason:
            dropped[reason] += 1
        out.extend((item_id, row) for row in rows)
    for item_id, responses in factual.items():
        rows = vr.factuality_rows(data.items[item_id], responses)
        if not rows:
            dropped["no_contrast"] += len(responses)
        out.extend((item_id, row) for row in rows)
    return out, dropped, counted


def _factuality_verdicts(candidates, votes, rule):
    if len(candidates) != 1:
        return None, "not_a_single_response"
    sentences = vr.sentence_texts(candidates[0])
    return vr.sentence_verdicts(votes, len(sentences), rule)


def content_hash_of(rows: list[tuple[str, dict]], rule: FreezeRule, seed: int) -> str:
    payload = {"rule": asdict(rule), "seed": seed, "rows": [[split, row] for split, row in rows]}
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dataset_version_freeze(
    *,
    project: Project,
    rule: FreezeRule,
    seed: int = 0,
    test_fraction: float = 0.1,
    created_by=None,
    on_stage: Callable[[str, int], None] | None = None,
    on_written: Callable[[DatasetVersion], None] | None = None,
) -> DatasetVersion:
    """Aggregate current votes by ``rule`` into a new immutable, numbered version with a seeded split.

    ``on_stage(stage, count)`` hears ``loading``, ``aggregating`` (tasks) and ``writing`` (examples).
    ``on_written(version)`` runs inside the version's transaction once its examples are in: whatever it
    writes commits with the version, and if it raises, the version is rolled back."""
    if not 0 <= test_fraction < 1:
        raise FreezeError(f"test_fraction must be at least 0 and below 1, not {test_fraction!r}.")
    report = on_stage or (lambda stage, count: None)
    report("loading", 0)
    data = project_data_load(project=project)
    report("aggregating", len(data.tasks))
    built, dropped, counted = rows_build(task_type=project.task_type, data=data, rule=rule)
    if not built:
        reasons = (
            ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items())) or "the project has no tasks"
        )
        raise FreezeError(f"No task qualifies under this rule ({reasons}).")
    conversational = any(isinstance(row.get("prompt"), list) for _, row in built)
    if conversational:
        built = [(item_id, vr.make_conversational(row)) for item_id, row in built]
    fixed = {i: item["split"] for i, item in data.items.items() if item["split"]}
    splits = vr.assign_splits({i for i, _ in built}, fixed, seed=seed, test_fraction=test_fraction)
    rows = [(splits[item_id], row) for item_id, row in built]
    stats = {**_stats(rows, data, dropped, counted), **gold_stats(project=project)}
    report("writing", len(rows))
    return _version_store(
        project=project,
        rule=rule,
        seed=seed,
        test_fraction=test_fraction,
        rows=rows,
        stats=stats,
        conversational=conversational,
        created_by=created_by,
        on_written=on_written,
    )


def _stats(rows, data: ProjectData, dropped: Counter, counted: int) -> dict:
    flip = flip_rate(data.human)
    n_test = sum(1 for split, _ in rows if split == "test")
    return {
        "examples": len(rows),
        "train": len(rows) - n_test,
        "test": n_test,
        "tasks_considered": len(data.tasks),
        "tasks_dropped": dict(sorted(dropped.items())),
        "votes": counted,
        "agreement_alpha": krippendorff_alpha(data.human),
        "label_flip_rate": flip["epsilon"],
        "label_flip_pairs": flip["pairs"],
    }


@transaction.atomic
def _version_store(
    *, project, rule, seed, test_fraction, rows, stats, conversational, created_by, on_written=None
):
    Project.objects.select_for_update().filter(pk=project.pk).first()
    number = (DatasetVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
    version = DatasetVersion.objects.create(
        project=project,
        number=number,
        rule=asdict(rule),
        seed=seed,
        test_fraction=test_fraction,
        stats=stats,
        content_hash=content_hash_of(rows, rule, seed),
        conversational=conversational,
        created_by=created_by,
    )
    _examples_insert(version, rows)
    if on_written is not None:
        on_written(version)
    return version


def _examples_insert(version: DatasetVersion, rows: list[tuple[str, dict]]) -> None:
    """PostgreSQL: one COPY (100k rows in seconds); elsewhere bulk_create in chunks."""
    if connection.vendor == "postgresql":
        table = DatasetExample._meta.db_table
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(
                f'COPY {table} (version_id, "index", split, "row") FROM STDIN'  # noqa: S608 -- model table name
            ) as copy,
        ):
            for index, (split, row) in enumerate(rows):
                copy.write_row((version.pk, index, split, json.dumps(row, ensure_ascii=False)))
        return
    for start in range(0, len(rows), BULK_CHUNK):
        DatasetExample.objects.bulk_create(
            DatasetExample(version=version, index=start + i, split=split, row=row)
            for i, (split, row) in enumerate(rows[start : start + BULK_CHUNK])
        )


def version_rows(*, version: DatasetVersion, split: str = "all"):
    """Selector: ``(split, row)`` of a version in index order, streamed from the database."""
    examples = DatasetExample.objects.filter(version=version).order_by("index")
    if split != "all":
        examples = examples.filter(split=split)
    return examples.values_list("split", "row").iterator(chunk_size=2000)
