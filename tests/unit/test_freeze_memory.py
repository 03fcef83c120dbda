"""A freeze streams the project: its memory follows a batch of tasks, not the project's size."""

import hashlib
import json
import tracemalloc
from dataclasses import asdict

import pytest

from annotation.models import Candidate, Item, Judgment, JudgmentSource, Task
from annotation.services import versions
from annotation.services.versions import FreezeRule, content_hash_of, dataset_version_freeze
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db
TASKS = 3000
TEXT = "x" * 1000


def _bulk_project(tasks: int):
    """``tasks`` pairwise tasks with an imported vote each and 3 × 1,000 characters of text per task."""
    project = ProjectFactory()
    items = Item.objects.bulk_create(
        Item(project=project, prompt=f"{i} {TEXT}", content_hash=f"h{i}") for i in range(tasks)
    )
    candidates = Candidate.objects.bulk_create(
        Candidate(item=item, position=p, text=f"{p} {TEXT}") for item in items for p in (0, 1)
    )
    pairs = [[candidates[2 * i].pk, candidates[2 * i + 1].pk] for i in range(tasks)]
    made = Task.objects.bulk_create(
        Task(project=project, item=item, candidate_ids=ids) for item, ids in zip(items, pairs, strict=True)
    )
    Judgment.objects.bulk_create(Judgment(task=t, source=JudgmentSource.IMPORTED, choice="a") for t in made)
    return project


def test_freeze_peak_memory_stays_far_below_the_projects_text(monkeypatch):
    project = _bulk_project(TASKS)
    monkeypatch.setattr(versions, "TASK_BATCH", 200, raising=False)
    tracemalloc.start()
    try:
        version = dataset_version_freeze(project=project, rule=FreezeRule(), test_fraction=0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert version.stats["examples"] == TASKS
    print(f"freeze of {TASKS} tasks: tracemalloc peak {peak / 1e6:.1f} MB")
    text_bytes = TASKS * 3 * len(TEXT)  # 9 MB; the whole-project freeze held it three times over
    assert peak < text_bytes / 3, f"peak {peak / 1e6:.1f} MB for {text_bytes / 1e6:.0f} MB of text"


def test_streamed_content_hash_equals_the_hash_of_the_whole_payload():
    rows = [
        ("train", {"prompt": "é ü", "chosen": [{"role": "assistant", "content": "x"}]}),
        ("test", {"a": 1.5}),
    ]
    rule, seed = FreezeRule(min_votes=2), 7
    payload = {"rule": asdict(rule), "seed": seed, "rows": [[split, row] for split, row in rows]}
    whole = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert content_hash_of(iter(rows), rule, seed) == hashlib.sha256(whole.encode()).hexdigest()
    empty = json.dumps(
        {"rule": asdict(rule), "seed": seed, "rows": []}, sort_keys=True, separators=(",", ":")
    )
    assert content_hash_of([], rule, seed) == hashlib.sha256(empty.encode()).hexdigest()
