"""Automatic step checking → Step-DPO pair proposals (the Step-DPO paper's data pipeline, run locally).

For a problem with a verifiable answer: check a sampled solution's steps, locate the first wrong one,
resample continuations from the correct prefix and keep those whose steps all hold and reach the right
answer; the first step of such a continuation is ``chosen``, the wrong step ``rejected``.

The pure part lives in ``annotation.builders.step_pairs`` (tested with a seeded fake sampler); the
training app's generation job runs it with a model's sampler. Proposals are stored as step-wise Items (prompt,
``metadata.initial_reason_steps`` and ``answer``, candidates 0 = chosen, 1 = rejected, no task) until a
manager accepts one (a pair task and the reviewer's ``a`` judgment) or rejects it.
"""

import hashlib
import json
from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.builders.arithmetic import join_steps, problem_generate, solution_text, split_steps
from annotation.builders.step_pairs import (  # noqa: F401 (re-exported for callers)
    StepPair,
    StepSampler,
    continuation_prompt,
    model_step_sampler,
    number_of,
    step_pairs_for_solution,
)

from ..models import (
    Assignment,
    AssignmentState,
    Candidate,
    Item,
    Judgment,
    JudgmentSource,
    Project,
    Task,
    TaskType,
)
from .progress import progress_assignment_done, progress_tasks_added

PROPOSED, ACCEPTED, REJECTED = "proposed", "accepted", "rejected"


def _content_hash(payload: dict) -> str:
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def arithmetic_items_add(*, project: Project, count: int, seed: int = 0) -> list[Item]:
    """Add ``count`` seeded arithmetic word problems (answer in metadata) to a step-wise project."""
    if project.task_type != TaskType.STEPWISE:
        raise ValidationError("Arithmetic problems go into step-wise projects.")
    if not 1 <= count <= 1000:
        raise ValidationError({"count": f"count must be from 1 to 1000, not {count}."})
    items = []
    for offset in range(count):
        problem = problem_generate(seed + offset)
        content_hash = _content_hash({"prompt": problem.question, "answer": problem.answer})
        if project.items.filter(content_hash=content_hash).exists():
            continue
        metadata = {"answer": str(problem.answer), "arithmetic": {"seed": problem.seed}}
        metadata["reference_solution"] = solution_text(problem)
        items.append(
            Item.objects.create(
                project=project,
                prompt=problem.question,
                metadata=metadata,
                source=f"arithmetic:{problem.seed}",
                content_hash=content_hash,
            )
        )
    return items


def checkable_candidates(*, project: Project):
    """Model-sampled candidates of items with a numeric answer (proposal items excluded)."""
    return (
        Candidate.objects.filter(
            item__project=project, item__metadata__has_key="answer", provenance__kind="model"
        )
        .exclude(item__metadata__has_key="step_proposal")
        .select_related("item")
        .order_by("item_id", "position")
    )


def step_proposal_store(
    *, project: Project, pair: StepPair, source: Candidate, provenance: dict
) -> Item | None:
    """Store one proposal as a task-less step-wise item; None when the same pair is already proposed."""
    content = {
        "prompt": pair.prompt,
        "steps": pair.initial_reason_steps,
        "c": pair.chosen,
        "r": pair.rejected,
    }
    content_hash = _content_hash(content)
    if project.items.filter(content_hash=content_hash).exists():
        return None
    with transaction.atomic():
        item = Item.objects.create(
            project=project,
            prompt=pair.prompt,
            metadata={
                "initial_reason_steps": join_steps(pair.initial_reason_steps),
                "answer": pair.answer,
                "step_proposal": {
                    "status": PROPOSED,
                    "source_candidate": source.pk,
                    "continuation": list(pair.continuation),
                },
            },
            source=f"step-pipeline:{source.item_id}",
            content_hash=content_hash,
        )
        for position, text in enumerate((pair.chosen, pair.rejected)):
            kind = "model" if position == 0 else source.provenance.get("kind", "model")
            Candidate.objects.create(
                item=item,
                position=position,
                text=text,
                steps=[text],
                provenance={**provenance, "kind": kind, "role": ("chosen", "rejected")[position]},
            )
    return item


def step_pipeline_run(
    *,
    project: Project,
    sampler: StepSampler,
    n: int = 4,
    seed: int = 0,
    provenance: dict | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Check every model candidate of the project's verifiable problems and store the proposals."""
    candidates = list(checkable_candidates(project=project))
    stats = {"checked": 0, "correct": 0, "unparsed": 0, "wrong": 0, "proposals": 0}
    for done, candidate in enumerate(candidates, start=1):
        if on_progress:
            on_progress(done - 1, len(candidates))
        if number_of(candidate.item.metadata["answer"]) is None:
            stats["unparsed"] += 1  # an answer we cannot compare (not a number)
            continue
        steps = candidate.steps or split_steps(candidate.text)
        check, pairs = step_pairs_for_solution(
            question=candidate.item.prompt,
            answer=candidate.item.metadata["answer"],
            steps=steps,
            sampler=sampler,
            n=n,
            seed=seed + candidate.pk,
        )
        stats["checked"] += 1
        stats["correct" if check.correct else "wrong"] += 1
        for pair in pairs:
            stored = step_proposal_store(
                project=project, pair=pair, source=candidate, provenance=provenance or {"kind": "model"}
            )
            stats["proposals"] += stored is not None
    if on_progress:
        on_progress(len(candidates), len(candidates))
    return stats


def step_proposals(*, project: Project, status: str = PROPOSED):
    """Selector: proposal items with the given review status, oldest first, candidates prefetched."""
    return (
        project.items.filter(metadata__step_proposal__status=status)
        .prefetch_related("candidates")
        .order_by("id")
    )


def step_proposal_review(*, item: Item, reviewer, accept: bool) -> Item:
    """Accept (pair task [chosen, rejected] + the reviewer's ``a`` judgment) or reject a proposal."""
    with transaction.atomic():
        item = Item.objects.select_for_update().get(pk=item.pk)
        proposal = (item.metadata or {}).get("step_proposal")
        if not proposal:
            raise ValidationError("This item is not a Step-DPO proposal.")
        if proposal["status"] != PROPOSED:
            raise ValidationError(f"This proposal was already {proposal['status']}.")
        proposal.update(status=ACCEPTED if accept else REJECTED, reviewer=reviewer.pk)
        item.save(update_fields=["metadata"])
        if accept:
            ids = list(item.candidates.order_by("position").values_list("pk", flat=True))
            task = Task.objects.create(project=item.project, item=item, candidate_ids=ids)
            Assignment.objects.create(  # the review fills one slot of the task's overlap
                task=task,
                annotator=reviewer,
                state=AssignmentState.DONE,
                shown_order=ids,
                expires_at=timezone.now(),
            )
            Judgment.objects.create(
                task=task,
                annotator=reviewer,
                source=JudgmentSource.HUMAN,
                choice="a",
                shown_order=ids,
                rationale="Accepted Step-DPO proposal (automatic step check).",
            )
            progress_tasks_added(project_id=task.project_id, count=1)
            progress_assignment_done(task=task, annotator_id=reviewer.pk, overlap=item.project.overlap)
    return item
