"""Helpers for the training app's tests: a tiny model folder, a dataset version, small job settings, a
succeeded job with a registered final model."""

import random
from pathlib import Path

from annotation.models import Candidate, DatasetExample, DatasetVersion, Item, Judgment, Task, TaskType
from annotation.services.versions import FreezeRule, dataset_version_freeze
from jobs.models import JobState
from training.engine.lm.tiny import tiny_llama, tiny_tokenizer
from training.models import Location, ModelEntry, TrainingJob

WORDS = ["cat", "dog", "sun", "tree", "blue", "moon", "fish", "rock"]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Chosen answers in lower case, rejected in upper case: a property a tiny model learns fast."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(2))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        other = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        rows.append({"prompt": prompt, "chosen": answer, "rejected": other.upper()})
    return rows


def tiny_model_entry(folder, *, name: str = "tiny-llama", hidden: int = 32, layers: int = 1) -> ModelEntry:
    """Save a random tiny Llama and its char tokenizer to ``folder`` and register it as a local model."""
    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer), hidden=hidden, layers=layers, heads=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelEntry.objects.create(name=name, location=Location.LOCAL, path=str(folder))


def dataset_version(project, *, train: int = 24, test: int = 8, stats: dict | None = None) -> DatasetVersion:
    rows = synthetic_rows(train + test)
    version = DatasetVersion.objects.create(
        project=project,
        number=DatasetVersion.objects.filter(project=project).count() + 1,
        rule={"kind": "majority"},
        seed=0,
        test_fraction=test / (train + test),
        content_hash="ab" * 32,
        stats=stats or {"examples": train + test, "train": train, "test": test, "label_flip_rate": 0.12},
    )
    DatasetExample.objects.bulk_create(
        DatasetExample(version=version, index=i, split="train" if i < train else "test", row=row)
        for i, row in enumerate(rows)
    )
    return version


def tiny_params(tmp_path, **overrides) -> dict:
    """Job settings that train a tiny model in well under a second per step."""
    params = {
        "method": "dpo",
        "batch_size": 4,
        "max_steps": 6,
        "learning_rate": 1e-3,
        "max_length": 64,
        "warmup_ratio": 0.0,
        "save_steps": 2,
        "eval_steps": 3,
    }
    params.update(overrides)
    return params


def ranking_version(project, annotator, *, items: int = 16, test_every: int = 4) -> DatasetVersion:
    """A ranking project whose items rank three responses (lower case best, mixed, upper case worst),
    judged by ``annotator``, frozen through the freeze service (every ``test_every``-th item held out)."""
    project.task_type = TaskType.RANKING
    project.save(update_fields=["task_type"])
    for i, row in enumerate(synthetic_rows(items, seed=3)):
        split = "test" if i % test_every == 0 else "train"
        item = Item.objects.create(project=project, prompt=row["prompt"], split=split, content_hash=f"r{i}")
        texts = (row["chosen"], f"{row['chosen']} {row['rejected']}", row["rejected"])
        candidates = [Candidate.objects.create(item=item, position=k, text=t) for k, t in enumerate(texts)]
        task = Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in candidates])
        Judgment.objects.create(task=task, annotator=annotator, ranking=[[c.pk] for c in candidates])
    return dataset_version_freeze(project=project, rule=FreezeRule(), created_by=annotator)


def launch_form_data(form_page_context, base_model, version, **overrides) -> dict:
    """What the launch form posts: every field at its shown initial value, then ``overrides``."""
    form = form_page_context["form"]
    data = {
        name: ("" if field.initial is None else field.prepare_value(field.initial))
        for name, field in form.fields.items()
    }
    data = {k: v for k, v in data.items() if not (isinstance(v, bool) and not v)}
    data.update(
        method=form.method,
        base_model=base_model.pk,
        dataset_version=version.pk,
        queue="cpu",
        run_token=form.fields["run_token"].initial,
        max_steps=4,
        learning_rate=0.001,
    )
    data.update(overrides)
    return data


def succeeded_job(tmp_path, project, manager) -> TrainingJob:
    """A succeeded DPO job of a tiny base whose registered final model is a tiny Llama with other weights
    (so base and trained answer differently), as if a run had written it; ARTIFACT_ROOT must be set."""
    from training.services.jobs import training_job_launch
    from training.services.registry import model_entry_register_from_job

    base = tiny_model_entry(tmp_path / "tiny")
    job = training_job_launch(
        params=tiny_params(tmp_path),
        base_model=base,
        dataset_version=dataset_version(project),
        created_by=manager,
    )
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    job.refresh_from_db()
    final = Path(job.config["output_dir"]) / "final"
    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer), hidden=32, layers=1, heads=2, seed=7).save_pretrained(final)
    tokenizer.save_pretrained(final)
    model_entry_register_from_job(job=job, folder=final)
    return TrainingJob.objects.get(pk=job.pk)
