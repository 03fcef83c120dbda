"""Freezing a project's judgments into an immutable, numbered DatasetVersion."""

import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from itertools import islice

from django.db import connection, transaction

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
TASK_BATCH = 2000
ITEM_FIELDS = ("id", "prompt", "messages", "metadata", "split")


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
class TaskBatch:
    """Up to ``TASK_BATCH`` tasks in (item, id) order, with what their rows are built from."""

    tasks: list[tuple[int, int, list[int]]]
    items: dict[int, dict]
    candidates: dict[int, dict]
    votes: dict[int, list[vr.Vote]]


@dataclass
class ProjectData:
    """A project's freeze input, read lazily: ``batches`` queries as it is consumed, and fills ``human``
    (each human annotator's current pairwise choice per task, for agreement) as it goes."""

    task_count: int
    batches: Iterator[TaskBatch]
    human: dict[int, dict[int, str]] = field(default_factory=dict)


def project_data_load(*, project: Project, task_ids: Collection[int] | None = None) -> ProjectData:
    """Selector: everything a freeze reads, streamed in task batches (a few queries per batch, none per
    task), so memory stays bounded by the batch rather than the project; ``task_ids`` reads only those."""
    tasks = Task.objects.filter(project=project).order_by("item_id", "id")
    if task_ids is not None:
        tasks = tasks.filter(pk__in=list(task_ids))
    data = ProjectData(task_count=tasks.count(), batches=iter(()))
    rows = tasks.values_list("id", "item_id", "candidate_ids").iterator(chunk_size=TASK_BATCH)
    data.batches = (_batch_load(project, batch, data.human) for batch in _chunks(rows, TASK_BATCH))
    return data


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _batch_load(project: Project, tasks: list, human: dict) -> TaskBatch:
    """The batch's items, candidates and votes, selected by the batch's item id range (the tasks come in
    item order; a range is far cheaper to send than thousands of ids)."""
    span = (tasks[0][1], tasks[-1][1])
    rows = Item.objects.filter(project=project, pk__range=span)
    items = {row["id"]: {**row, "images": []} for row in rows.values(*ITEM_FIELDS)}
    images = ItemImage.objects.filter(item__project=project, item__id__range=span).order_by(
        "item_id", "position"
    )
    for item_id, sha, file_name in images.values_list("item_id", "asset__sha256", "asset__file"):
        items[item_id]["images"].append(vr.image_name(sha, file_name))
    candidates = _candidates(Candidate.objects.filter(item__project=project, item__id__range=span))
    missing = {c for _, _, ids in tasks for c in ids} - candidates.keys()
    if missing:  # a task naming another item's candidate (or a deleted one)
        candidates |= _candidates(Candidate.objects.filter(pk__in=missing, item__project=project))
    judgments = Judgment.objects.filter(task__project=project, task__item__id__range=span)
    return TaskBatch(tasks=tasks, items=items, candidates=candidates, votes=_current_votes(judgments, human))


def _candidates(queryset) -> dict[int, dict]:
    out = {}
    values = ("id", "item_id", "text", "messages", "sentences", "steps", "asset__sha256", "asset__file")
    for row in queryset.values(*values):
        sha, file_name = row.pop("asset__sha256"), row.pop("asset__file")
        out[row["id"]] = {**row, "image": vr.image_name(sha, file_name) if sha else None}
    return out


def _current_votes(judgments, human: dict[int, dict[int, str]]) -> dict[int, list[vr.Vote]]:
    """Newest judgment per (task, human annotator) and every imported judgment, as Votes; each human
    annotator's pairwise choice is added to ``human``."""
    rows = (
        judgments.filter(superseded_by__isnull=True)
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
    for pk, task_id, annotator_id, source, choice, strength, ranking, labels, steps, fix, ratings in rows:
        imported = source == JudgmentSource.IMPORTED or annotator_id is None
        key = ("imported", pk) if imported else ("human", annotator_id)
        keyed.setdefault(task_id, {})[key] = vr.Vote(
            choice, strength, imported, ranking, labels, steps, fix, ratings
        )
        if not imported and choice in CATEGORIES:
            human.setdefault(task_id, {})[annotator_id] = choice
    return {task_id: list(by_key.values()) for task_id, by_key in keyed.items()}


@dataclass
class BuiltRows:
    """``rows_build``'s result: the rows spooled to a temporary file in order, and what the split and the
    stats need (rows per item, the items' fixed splits), so no list of every row is held."""

    spool: "RowSpool"
    dropped: Counter
    counted: int
    per_item: Counter = field(default_factory=Counter)
    fixed: dict[int, str] = field(default_factory=dict)
    conversational: bool = False

    @property
    def examples(self) -> int:
        return sum(self.per_item.values())


class RowSpool:
    """``(item_id, row)`` pairs written once to an anonymous temporary file, read back in order."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by close() or collection

    def write(self, item_id: int, row: dict) -> None:
        self.file.write(json.dumps([item_id, row], ensure_ascii=False).encode() + b"\n")

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        self.file.seek(0)
        for line in self.file:
            item_id, row = json.loads(line)
            yield item_id, row

    def close(self) -> None:
        self.file.close()


def rows_build(*, task_type: str, data: ProjectData, rule: FreezeRule) -> BuiltRows:
    """Build every task's rows, in (item, task) order, into a spool (see BuiltRows)."""
    built = BuiltRows(spool=RowSpool(), dropped=Counter(), counted=0)
    factual: tuple[int, dict, list] | None = None  # the current item's responses (factuality)
    for batch in data.batches:
        for task_id, item_id, candidate_ids in batch.tasks:
            votes = batch.votes.get(task_id, [])
            if not rule.drop_both_bad:
                votes = [v for v in votes if v.choice != "both_bad"]
            built.counted += len(votes)
            item = batch.items[item_id]
            candidates = [batch.candidates[c] for c in candidate_ids if c in batch.candidates]
            if task_type != TaskType.FACTUALITY:
                rows, reason = _task_rows(task_type, item, candidates, votes, rule)
                _built_add(built, item, rows, reason)
                continue
            verdicts, reason = _factuality_verdicts(candidates, votes, rule)
            if reason:
                built.dropped[reason] += 1
                continue
            if factual is not None and factual[0] != item_id:
                _factual_flush(built, factual)
                factual = None
            factual = factual or (item_id, item, [])
            factual[2].append((candidates[0], verdicts))
    if factual is not None:
        _factual_flush(built, factual)
    return built


def _task_rows(task_type, item, candidates, votes, rule):
    if task_type == TaskType.STEPWISE and len(candidates) == 1:  # a labelled solution
        return vr.step_label_rows(item, candidates[0], votes, rule)
    if task_type == TaskType.RANKING:
        return vr.ranking_rows(item, candidates, votes, rule)
    return vr.pair_rows(task_type, item, candidates, votes, rule)


def _factual_flush(built: BuiltRows, factual: tuple[int, dict, list]) -> None:
    _, item, responses = factual
    rows = vr.factuality_rows(item, responses)
    if not rows:
        built.dropped["no_contrast"] += len(responses)
    _built_add(built, item, rows, None)


def _built_add(built: BuiltRows, item: dict, rows: list[dict], reason: str | None) -> None:
    if reason:
        built.dropped[reason] += 1
    for row in rows:
        built.spool.write(item["id"], row)
        built.per_item[item["id"]] += 1
        built.conversational = built.conversational or isinstance(row.get("prompt"), list)
    if rows and item["split"]:
        built.fixed[item["id"]] = item["split"]


def _factuality_verdicts(candidates, votes, rule):
    if len(candidates) != 1:
        return None, "not_a_single_response"
    sentences = vr.sentence_texts(candidates[0])
    return vr.sentence_verdicts(votes, len(sentences), rule)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _rule_dict(rule: FreezeRule | dict) -> dict:
    return rule if isinstance(rule, dict) else asdict(rule)


def content_hash_of(rows: Iterable[tuple[str, dict]], rule: FreezeRule | dict, seed: int) -> str:
    """sha256 of the canonical JSON of ``{"rows": [[split, row], …], "rule": …, "seed": …}``, hashed as the
    rows stream by (the same bytes as dumping the whole payload at once, without holding it)."""
    digest = hashlib.sha256(b'{"rows":[')
    for n, pair in enumerate(rows):
        digest.update((("," if n else "") + _canonical(list(pair))).encode())
    digest.update(f'],"rule":{_canonical(_rule_dict(rule))},"seed":{_canonical(seed)}}}'.encode())
    return digest.hexdigest()


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
    """Aggregate current votes by ``rule`` into a new immutable, numbered version with a seeded split; when
    the project's latest version holds exactly these rows (the same rule, seed and split of the same votes:
    a retried freeze), that version is returned instead of a duplicate.

    Memory stays bounded by a batch of tasks, not the project: the project is read in batches, the rows
    are spooled to a temporary file, then read back twice (the content hash, then the COPY).

    ``on_stage(stage, count)`` hears ``loading``, ``aggregating`` (tasks) and ``writing`` (examples).
    ``on_written(version)`` runs inside the version's transaction once its examples are in: whatever it
    writes commits with the version, and if it raises, the version is rolled back."""
    if not 0 <= test_fraction < 1:
        raise FreezeError(f"test_fraction must be at least 0 and below 1, not {test_fraction!r}.")
    report = on_stage or (lambda stage, count: None)
    report("loading", 0)
    data = project_data_load(project=project)
    report("aggregating", data.task_count)
    built = rows_build(task_type=project.task_type, data=data, rule=rule)
    try:
        if not built.per_item:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(built.dropped.items()))
            raise FreezeError(f"No task qualifies under this rule ({reasons or 'the project has no tasks'}).")
        splits = vr.assign_splits(built.per_item, built.fixed, seed=seed, test_fraction=test_fraction)
        stats = {**_stats(built, splits, data), **gold_stats(project=project)}
        report("writing", built.examples)
        return _version_store(
            project=project,
            rule=rule,
            seed=seed,
            test_fraction=test_fraction,
            rows=lambda: _split_rows(built, splits),
            stats=stats,
            conversational=built.conversational,
            created_by=created_by,
            on_written=on_written,
        )
    finally:
        built.spool.close()


def rows_for_tasks(
    *, project: Project, task_ids: Collection[int], rule: FreezeRule
) -> tuple[list[dict], dict]:
    """The rows ``rule`` makes of the current votes on ``task_ids`` alone (the tasks an online loop's round
    put before annotators), in task order, and what a freeze would report of them: tasks considered and
    dropped by reason, votes counted, Krippendorff's α and the estimated flip rate of the human votes."""
    data = project_data_load(project=project, task_ids=task_ids)
    built = rows_build(task_type=project.task_type, data=data, rule=rule)
    try:
        rows = [vr.make_conversational(row) if built.conversational else row for _, row in built.spool]
    finally:
        built.spool.close()
    return rows, _vote_stats(built, data)


DROP_REASONS = {
    "no_votes": "no vote yet",
    "too_few_votes": "fewer votes than the rule asks",
    "no_majority": "no strict majority (the annotators disagree)",
    "low_agreement": "majority below the minimum agreement",
    "tie": "judged a tie",
    "both_bad": "judged both bad",
    "no_contrast": "a ranking without two distinct places",
    "no_wrong_step": "no step marked wrong",
    "no_correction": "no corrected step",
    "no_claim": "no sentence with a claim",
    "not_a_pair": "not a pair",
    "not_a_single_response": "not a single response",
}
"""What each reason a freeze drops a task for means, as the freeze preview says it."""
TINY_SPLIT = 10
"""Fewer rows than this in a split earns a warning in the freeze preview."""


@dataclass(frozen=True)
class FreezePreview:
    """What freezing now with a rule would make: rows per split, the tasks it drops by reason (in words,
    most first), warnings."""

    examples: int
    train: int
    test: int
    tasks_considered: int
    dropped: dict[str, int]
    warnings: list[str]


def freeze_preview(
    *, project: Project, rule: FreezeRule, seed: int = 0, test_fraction: float = 0.1
) -> FreezePreview:
    """The counts a freeze with these settings would produce, computed as the freeze computes them (the same
    rows, the same seeded split), without writing anything."""
    data = project_data_load(project=project)
    built = rows_build(task_type=project.task_type, data=data, rule=rule)
    built.spool.close()
    splits = vr.assign_splits(built.per_item, built.fixed, seed=seed, test_fraction=test_fraction)
    test = sum(n for item_id, n in built.per_item.items() if splits[item_id] == "test")
    train = built.examples - test
    dropped = {
        DROP_REASONS.get(reason, reason.replace("_", " ")): n
        for reason, n in sorted(built.dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    }
    warnings = []
    if not built.examples:
        warnings.append("No task qualifies under this rule: freezing would fail.")
    else:
        if not train:
            warnings.append("The training split would be empty: nothing to train on.")
        elif train < TINY_SPLIT:
            warnings.append(
                f"Only {train} training row{'s' if train != 1 else ''}: too few to train on much."
            )
        if not test:
            warnings.append(
                "The held-out split would be empty: a job trained on it has no held-out margin or accuracy "
                "to show. Raise the test fraction, or judge more tasks."
            )
        elif test < TINY_SPLIT:
            warnings.append(f"Only {test} held-out row{'s' if test != 1 else ''}: its figures will be noisy.")
    return FreezePreview(built.examples, train, test, data.task_count, dropped, warnings)


def current_rows(
    *, project: Project, rule: FreezeRule, seed: int = 0, test_fraction: float = 0.1
) -> Iterator[tuple[str, dict]]:
    """The ``(split, row)`` pairs a freeze with these settings would store now, streamed as the freeze
    builds them and stored nowhere: the "current judgments" export, for inspection (versions stay the
    only thing training reads)."""
    data = project_data_load(project=project)
    built = rows_build(task_type=project.task_type, data=data, rule=rule)
    try:
        splits = vr.assign_splits(built.per_item, built.fixed, seed=seed, test_fraction=test_fraction)
        yield from _split_rows(built, splits)
    finally:
        built.spool.close()


def dataset_version_from_rows(
    *,
    project: Project,
    rows: list[tuple[str, dict]],
    provenance: dict,
    seed: int = 0,
    stats: dict | None = None,
    created_by=None,
    on_written: Callable[[DatasetVersion], None] | None = None,
) -> DatasetVersion:
    """A new immutable version of ``project`` holding ``rows`` (``(split, row)``, already in the export's
    shape), built by something other than the project's votes (an online loop's labeller); ``provenance``
    is stored as its rule and says what built it.  A retried call with the same rows returns the version
    the first one wrote; ``on_written`` runs in the version's transaction, as for a freeze."""
    if not rows:
        raise FreezeError("No rows to freeze.")
    for split, row in rows:
        if split not in ("train", "test") or not isinstance(row, dict):
            raise FreezeError(f"Rows are (split, row) pairs with split train or test, not {split!r}.")
    n_test = sum(split == "test" for split, _ in rows)
    counts = {"examples": len(rows), "train": len(rows) - n_test, "test": n_test}
    return _version_store(
        project=project,
        rule=provenance,
        seed=seed,
        test_fraction=n_test / len(rows),
        rows=lambda: iter(rows),
        stats={**counts, **(stats or {})},
        conversational=any(isinstance(row.get("prompt"), list) for _, row in rows),
        created_by=created_by,
        on_written=on_written,
    )


def _split_rows(built: BuiltRows, splits: dict[int, str]) -> Iterator[tuple[str, dict]]:
    """The spooled rows as ``(split, row)``, all conversational when any row is."""
    for item_id, row in built.spool:
        yield splits[item_id], vr.make_conversational(row) if built.conversational else row


def _stats(built: BuiltRows, splits: dict[int, str], data: ProjectData) -> dict:
    n_test = sum(n for item_id, n in built.per_item.items() if splits[item_id] == "test")
    counts = {"examples": built.examples, "train": built.examples - n_test, "test": n_test}
    return {**counts, **_vote_stats(built, data)}


def _vote_stats(built: BuiltRows, data: ProjectData) -> dict:
    """What the rule did with the votes: tasks considered and dropped by reason, votes counted, and the
    human votes' agreement (Krippendorff's α) and estimated flip rate."""
    flip = flip_rate(data.human)
    return {
        "tasks_considered": data.task_count,
        "tasks_dropped": dict(sorted(built.dropped.items())),
        "votes": built.counted,
        "agreement_alpha": krippendorff_alpha(data.human),
        "label_flip_rate": flip["epsilon"],
        "label_flip_pairs": flip["pairs"],
    }


@transaction.atomic
def _version_store(
    *, project, rule, seed, test_fraction, rows, stats, conversational, created_by, on_written=None
):
    """``rows()`` streams the version's ``(split, row)`` pairs (called twice: hash, then insert). The hash
    is computed in a first pass, before anything is written, so a retried freeze writes nothing."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    content_hash = content_hash_of(rows(), rule, seed)
    latest = DatasetVersion.objects.filter(project=project).order_by("-number").first()
    if latest is not None and (latest.content_hash, latest.test_fraction) == (content_hash, test_fraction):
        # The same rule on the same votes again (a retried freeze): the version already exists.
        if on_written is not None:
            on_written(latest)
        return latest
    number = (latest.number if latest else 0) + 1
    version = DatasetVersion.objects.create(
        project=project,
        number=number,
        rule=_rule_dict(rule),
        seed=seed,
        test_fraction=test_fraction,
        stats=stats,
        content_hash=content_hash,
        conversational=conversational,
        created_by=created_by,
    )
    _examples_insert(version, rows())
    if on_written is not None:
        on_written(version)
    return version


def _examples_insert(version: DatasetVersion, rows: Iterable[tuple[str, dict]]) -> None:
    """Stream ``rows`` in: on PostgreSQL one COPY (100k rows in seconds), elsewhere bulk_create in chunks."""
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
    for chunk in _chunks(enumerate(rows), BULK_CHUNK):
        DatasetExample.objects.bulk_create(
            DatasetExample(version=version, index=index, split=split, row=row)
            for index, (split, row) in chunk
        )


def version_rows(*, version: DatasetVersion, split: str = "all"):
    """Selector: ``(split, row)`` of a version in index order, streamed from the database."""
    examples = DatasetExample.objects.filter(version=version).order_by("index")
    if split != "all":
        examples = examples.filter(split=split)
    return examples.values_list("split", "row").iterator(chunk_size=2000)
