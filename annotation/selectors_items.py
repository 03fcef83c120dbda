"""Read queries for curation: the item browser, the item page and the disagreement queue (managers).

Every selector here costs a fixed number of queries, whatever the page holds: counts are subqueries
or one aggregate, and a page's judgments, candidates and images are read in one query each.

**What counts as a disagreement.** Each human annotator's current (not superseded) judgment on a
task is one vote; imported judgments are not votes here, as on the agreement page. A task is in
disagreement when two or more annotators voted and their votes are not all equal, where a vote is:

* a pairwise choice (``a``, ``b``, ``tie``, ``both_bad``): pairwise, multi-image, image-pair and
  step-wise pair tasks;
* a ranking, compared as its ordered groups (a tie group is one group): the same pair relations
  ``ranking_rows`` builds rows from;
* for step labels, the first wrong step (or: none wrong), which decides a Step-DPO row;
* for sentence labels, the label of every sentence (``gold_label``: factual, hallucinated,
  not_claim), as the per-sentence agreement compares them.

An item is in disagreement when any of its tasks is.
"""

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from .models import Assignment, AssignmentState, Candidate, Item, ItemImage, Judgment, JudgmentSource, Task
from .services.agreement import CATEGORIES, step_labels_of
from .services.gold import gold_label

PAGE_SIZE = 50
FILTERS = ("all", "judged", "unjudged", "disagreement", "gold", "skipped")


# --- disagreement ----------------------------------------------------------------------------------


def vote_key(choice, ranking, step_labels, first_wrong_step, sentence_labels) -> Hashable | None:
    """One judgment as a value two votes compare equal by (module docstring); None: it holds no vote."""
    if choice in CATEGORIES:
        return ("choice", choice)
    if ranking:
        groups = (group if isinstance(group, list) else [group] for group in ranking)
        return ("ranking", tuple(tuple(sorted(str(c) for c in group)) for group in groups))
    labels = step_labels_of(step_labels, first_wrong_step)
    if labels is not None:
        return ("first_wrong", labels.index("wrong") if "wrong" in labels else None)
    if sentence_labels:
        return ("sentences", tuple(gold_label(label) for label in sentence_labels))
    return None


def current_human_judgments(*, project) -> QuerySet[Judgment]:
    """Each human annotator's current judgments in the project (the votes of the module docstring)."""
    return Judgment.objects.filter(
        task__project=project,
        source=JudgmentSource.HUMAN,
        annotator__isnull=False,
        superseded_by__isnull=True,
    )


def disagreeing_tasks(*, project) -> dict[int, int]:
    """Selector: ``{task_id: item_id}`` for the tasks whose current human votes disagree (one query)."""
    rows = (
        current_human_judgments(project=project)
        .order_by("id")
        .values_list(
            "task_id",
            "task__item_id",
            "annotator_id",
            "choice",
            "ranking",
            "step_labels",
            "first_wrong_step",
            "sentence_labels",
        )
    )
    votes: dict[int, dict[int, Hashable]] = {}
    item_of: dict[int, int] = {}
    for task_id, item_id, annotator_id, *fields in rows.iterator(chunk_size=5000):
        if (key := vote_key(*fields)) is not None:  # the newest judgment per annotator wins, by id
            votes.setdefault(task_id, {})[annotator_id] = key
            item_of[task_id] = item_id
    return {task_id: item_of[task_id] for task_id, by in votes.items() if _differ(by)}


def judgments_disagree(judgments: Iterable[Judgment]) -> bool:
    """Whether one task's votes disagree, from all its judgments already loaded (no query)."""
    judgments = sorted(judgments, key=lambda j: j.pk)
    superseded = {j.supersedes_id for j in judgments}
    votes = {}
    for j in judgments:
        if j.source != JudgmentSource.HUMAN or j.annotator_id is None or j.pk in superseded:
            continue
        key = vote_key(j.choice, j.ranking, j.step_labels, j.first_wrong_step, j.sentence_labels)
        if key is not None:
            votes[j.annotator_id] = key
    return _differ(votes)


def _differ(votes: dict[int, Hashable]) -> bool:
    """Two or more annotators voted, and not all alike."""
    return len(set(votes.values())) > 1


def disagreement_queue(*, project, page_number) -> tuple[Page, dict[int, int]]:
    """A page of the disagreeing tasks in (item, task) order, and every disagreeing ``{task: item}``."""
    tasks = disagreeing_tasks(project=project)
    page = Paginator(sorted(tasks, key=lambda t: (tasks[t], t)), PAGE_SIZE).get_page(page_number)
    by_id = Task.objects.select_related("item").in_bulk(list(page.object_list))
    page.object_list = [by_id[task_id] for task_id in page.object_list if task_id in by_id]
    return page, tasks


def queue_votes(*, tasks: list[Task]) -> dict[int, list[Judgment]]:
    """The current human judgments of the tasks, with their annotators, by task (one query)."""
    judgments = Judgment.objects.filter(
        task__in=tasks, source=JudgmentSource.HUMAN, annotator__isnull=False, superseded_by__isnull=True
    ).select_related("annotator")
    by_task: dict[int, list[Judgment]] = {}
    for judgment in judgments.order_by("task_id", "annotator__username", "id"):
        by_task.setdefault(judgment.task_id, []).append(judgment)
    return by_task


def candidates_of(*, item_ids) -> dict[int, Candidate]:
    """The items' candidates by id (one query), to name the responses a vote refers to."""
    return {c.pk: c for c in Candidate.objects.filter(item_id__in=list(item_ids)).only("id", "position")}


# --- the item browser ------------------------------------------------------------------------------


def _count_of(queryset, *, by: str) -> Coalesce:
    """A correlated count of ``queryset`` (filtered on ``OuterRef("pk")``, the item, through ``by``)."""
    counts = queryset.order_by().values(by).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def _judged() -> Exists:
    return Exists(Judgment.objects.filter(task__item=OuterRef("pk")))


def _skipped() -> Exists:
    return Exists(Assignment.objects.filter(task__item=OuterRef("pk"), state=AssignmentState.SKIPPED))


def items_matching(*, project, query: str = "") -> QuerySet[Item]:
    """The project's items whose prompt or any candidate's text contains ``query`` (case-insensitive)."""
    items = Item.objects.filter(project=project)
    query = query.strip()
    if query:
        in_candidate = Exists(Candidate.objects.filter(item=OuterRef("pk"), text__icontains=query))
        items = items.filter(Q(prompt__icontains=query) | in_candidate)
    return items


@dataclass(frozen=True)
class ItemBrowser:
    counts: dict[str, int]
    page: Page
    disagreeing: set[int]


def item_browser(*, project, filter_name: str, query: str, page_number) -> ItemBrowser:
    """Counts per filter (for the search), and one page of the chosen filter's items in id order."""
    items = items_matching(project=project, query=query)
    disagreeing = set(disagreeing_tasks(project=project).values())
    counts = items.aggregate(
        all=Count("pk"),
        judged=Count("pk", filter=_judged()),
        gold=Count("pk", filter=Q(is_gold=True)),
        skipped=Count("pk", filter=_skipped()),
    )
    counts["unjudged"] = counts["all"] - counts["judged"]
    if query.strip() and disagreeing:  # the disagreeing items the search matches
        disagreeing &= set(items.values_list("pk", flat=True))
    counts["disagreement"] = len(disagreeing)
    if filter_name == "disagreement":  # a list of ids: paged in Python, never sent whole as SQL
        page = Paginator(sorted(disagreeing), PAGE_SIZE).get_page(page_number)
        rows = {item.pk: item for item in _rows(items.filter(pk__in=list(page.object_list)))}
        page.object_list = [rows[pk] for pk in page.object_list if pk in rows]
    else:
        page = Paginator(_rows(_filtered(items, filter_name)), PAGE_SIZE).get_page(page_number)
    return ItemBrowser(counts={name: counts[name] for name in FILTERS}, page=page, disagreeing=disagreeing)


def _filtered(items: QuerySet[Item], filter_name: str) -> QuerySet[Item]:
    predicates = {"judged": _judged(), "unjudged": ~_judged(), "gold": Q(is_gold=True), "skipped": _skipped()}
    return items.filter(predicates[filter_name]) if filter_name in predicates else items


def _rows(items: QuerySet[Item]) -> QuerySet[Item]:
    """The browser's columns: counts of candidates, tasks, current judgments and skips per item."""
    ref = OuterRef("pk")
    current = Judgment.objects.filter(task__item=ref, superseded_by__isnull=True)
    skips = Assignment.objects.filter(task__item=ref, state=AssignmentState.SKIPPED)
    return items.order_by("id").annotate(
        n_candidates=_count_of(Candidate.objects.filter(item=ref), by="item"),
        n_tasks=_count_of(Task.objects.filter(item=ref), by="item"),
        n_judgments=_count_of(current, by="task__item"),
        n_skipped=_count_of(skips, by="task__item"),
    )


# --- the item page ---------------------------------------------------------------------------------


def item_for_page(*, project, item_id: int) -> Item | None:
    """The item with its images, candidates, tasks, every judgment (superseded ones too, with the
    judgment that replaced each) and skipped assignments: a fixed number of queries. None: not here."""
    judgments = Judgment.objects.select_related("annotator").order_by("id")
    skips = Assignment.objects.filter(state=AssignmentState.SKIPPED).select_related("annotator")
    return (
        Item.objects.filter(project=project, pk=item_id)
        .prefetch_related(
            Prefetch("images", queryset=ItemImage.objects.select_related("asset").order_by("position")),
            Prefetch("candidates", queryset=Candidate.objects.select_related("asset").order_by("position")),
            Prefetch("tasks", queryset=Task.objects.order_by("id")),
            Prefetch("tasks__judgments", queryset=judgments),
            Prefetch("tasks__assignments", queryset=skips.order_by("id"), to_attr="skips"),
        )
        .first()
    )
