"""Candidates a model sampled, written into a project: the responses and the tasks its type needs.

Generation jobs (``training/services/generation.py``) sample; this module is how their output enters the
curation side.  Tasks per project type (docs/data-mapping.md): pairwise, every pair of the new candidates;
ranking, one task with all of them; step-wise and factuality, one task per candidate (steps / sentences
split here).  ``candidates_post`` does the same for an online loop's round of sampled responses, which
annotators then judge in the usual screens.
"""

import hashlib
import json
from itertools import combinations

from django.db import transaction
from django.db.models import Max

from annotation.builders.arithmetic import split_steps
from annotation.text.sentences import split_sentences

from ..models import Candidate, Item, Project, Task, TaskType
from .progress import progress_tasks_added

GENERATION_TYPES = (TaskType.PAIRWISE, TaskType.RANKING, TaskType.STEPWISE, TaskType.FACTUALITY)
STEP_INSTRUCTION = "Solve it step by step, one step per line, and end with: The answer is N."


def items_to_fill(*, project: Project):
    """Items that generation samples for: not gold, not Step-DPO proposals."""
    return project.items.filter(is_gold=False).exclude(metadata__has_key="step_proposal").order_by("id")


def items_filled_by(*, project: Project, job_id: int) -> set[int]:
    """Ids of the project's items that already hold candidates from generation job ``job_id``."""
    found = Candidate.objects.filter(item__project=project, provenance__job=job_id)
    return set(found.values_list("item_id", flat=True))


def item_prompt(item: Item, task_type: str):
    """What the model is asked: the item's messages or prompt (step-wise adds the step instruction)."""
    if item.messages:
        return item.messages
    if task_type == TaskType.STEPWISE:
        return f"{item.prompt}\n\n{STEP_INSTRUCTION}"
    return item.prompt


def candidates_add(*, item: Item, texts: list[str], provenance: dict) -> tuple[int, int]:
    """Append sampled responses to an item and create the tasks its project type needs, in one
    transaction (a job that dies half-way leaves whole items only)."""
    task_type = item.project.task_type
    with transaction.atomic():
        top = item.candidates.aggregate(top=Max("position"))["top"]
        start = 0 if top is None else top + 1
        candidates = [
            Candidate.objects.create(
                item=item,
                position=start + index,
                text=text,
                steps=(split_steps(text) or [text]) if task_type == TaskType.STEPWISE else None,
                sentences=split_sentences(text) if task_type == TaskType.FACTUALITY else None,
                provenance={**provenance, "sample_index": index},
            )
            for index, text in enumerate(texts)
        ]
        ids = [c.pk for c in candidates]
        if task_type == TaskType.PAIRWISE:
            groups = [list(pair) for pair in combinations(ids, 2)]
        elif task_type == TaskType.RANKING:
            groups = [ids] if len(ids) >= 2 else []
        else:
            groups = [[candidate_id] for candidate_id in ids]
        Task.objects.bulk_create(Task(project=item.project, item=item, candidate_ids=g) for g in groups)
        progress_tasks_added(project_id=item.project_id, count=len(groups))
    return len(candidates), len(groups)


def _prompt_item(project: Project, prompt, source: str) -> Item:
    """The project's item asking ``prompt`` (text, or chat messages), created when there is none."""
    if isinstance(prompt, list):
        found = project.items.filter(messages=prompt, is_gold=False).first()
    else:
        found = project.items.filter(prompt=prompt, messages__isnull=True, is_gold=False).first()
    if found is not None:
        return found
    digest = hashlib.sha256(json.dumps({"prompt": prompt}, sort_keys=True).encode()).hexdigest()
    text, messages = ("", prompt) if isinstance(prompt, list) else (prompt, None)
    return Item.objects.create(
        project=project, prompt=text, messages=messages, source=source, content_hash=digest
    )


def candidates_post(
    *, project: Project, prompts: list, texts: list[list[str]], batch: str, provenance: dict
) -> list[int]:
    """Put each prompt's sampled ``texts`` before the project's annotators (on the prompt's item, made when
    the project has none) and return the ids of every task of ``batch``, a name the caller gives this set
    of responses.  Idempotent: a prompt whose item already holds responses of ``batch`` is left as it is,
    so a retried call posts only what the first did not."""
    if project.task_type not in (TaskType.PAIRWISE, TaskType.RANKING):
        raise ValueError(f"{project.get_task_type_display()} projects do not take sampled text responses.")
    for prompt, responses in zip(prompts, texts, strict=True):
        item = _prompt_item(project, prompt, source=batch)
        if not item.candidates.filter(provenance__batch=batch).exists():
            candidates_add(item=item, texts=responses, provenance={**provenance, "batch": batch})
    posted = dict(
        Candidate.objects.filter(item__project=project, provenance__batch=batch).values_list("id", "item_id")
    )
    tasks = Task.objects.filter(item_id__in=set(posted.values())).order_by("item_id", "id")
    return [task.pk for task in tasks if set(task.candidate_ids) <= posted.keys()]
