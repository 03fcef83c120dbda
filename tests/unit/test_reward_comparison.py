"""DPO implicit reward vs a reward model under shift, in the studio: a generation-queue job compares a
finished tiny DPO job with a tiny reward model on a version's held-out rows cut by a rule by source,
stores the engine's numbers with provenance and shows them; outsiders get 404, bad input a 400 naming
the field."""

import pytest
from django.urls import reverse

from annotation.models import DatasetExample, Item
from jobs.models import JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training_support import dataset_version, synthetic_rows, tiny_model_entry, tiny_params
from training.engine.lm.models import load_model, load_tokenizer
from training.engine.lm.reward_comparison import ScoredSide, compare_on_splits
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.shift import ShiftRule
from training.models import (
    GenerationJob,
    GenerationKind,
    Location,
    ModelEntry,
    ModelKind,
    RewardComparison,
    TrainingJob,
)
from training.services.generation import generation_job_run
from training.services.jobs import training_job_launch
from training.services.reward_comparison import heldout_rows, reward_comparison_create
from training.services.runner import training_job_run

TRAIN, TEST = 24, 8


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2


def version_with_sources(project):
    """A tiny synthetic version (one item per prompt), its held-out items imported from two sources."""
    version = dataset_version(project, train=TRAIN, test=TEST)
    rows = [{**row, "prompt": f"{row['prompt']} {i}"} for i, row in enumerate(synthetic_rows(TRAIN + TEST))]
    version.examples.all().delete()
    DatasetExample.objects.bulk_create(
        DatasetExample(version=version, index=i, split="train" if i < TRAIN else "test", row=row)
        for i, row in enumerate(rows)
    )
    for i, row in enumerate(rows):
        source = "train.jsonl" if i < TRAIN else ("forum.csv" if i % 2 else "wiki.jsonl")
        Item.objects.create(project=project, prompt=row["prompt"], source=source, content_hash=f"h{i}")
    return version


def finished_job(project, version, *, method="dpo", kind=ModelKind.CAUSAL_LM):
    """A succeeded job row with a registered model (no training: for the form and access tests)."""
    base = ModelEntry.objects.create(name=f"base-{method}", location=Location.LOCAL, path="/nowhere")
    job = TrainingJob.objects.create(
        method=method,
        config={"beta": 0.1, "max_length": 64},
        base_model=base,
        dataset_version=version,
        state=JobState.SUCCEEDED,
    )
    ModelEntry.objects.create(
        name=f"trained-{method}",
        kind=kind,
        location=Location.LOCAL,
        path="/nowhere/final",
        project=project,
        produced_by=job,
    )
    return job


@pytest.mark.django_db(transaction=True)
def test_a_comparison_job_stores_the_engines_accuracies_with_provenance_and_shows_them(
    tmp_path, project, manager, manager_client
):
    version = version_with_sources(project)
    base = tiny_model_entry(tmp_path / "tiny")
    dpo = training_job_launch(params=tiny_params(tmp_path), base_model=base, dataset_version=version)
    rm = training_job_launch(
        params=tiny_params(tmp_path, method="reward_model"), base_model=base, dataset_version=version
    )
    for job in (dpo, rm):
        assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
        job.refresh_from_db()
    rows = heldout_rows(version=version)
    assert {r["source"] for r in rows} == {"forum.csv", "wiki.jsonl"}
    rm_entry = ModelEntry.objects.get(produced_by=rm)
    rule = ShiftRule(kind="source", values=("forum.csv",))
    comparison = reward_comparison_create(
        version=version, policy_job=dpo, reward_model=rm_entry, rule=rule, created_by=manager
    )
    generation_job_run(job_id=comparison.job_id)
    comparison.refresh_from_db()
    job = comparison.job
    assert (job.kind, job.state) == (GenerationKind.REWARD_COMPARISON, JobState.SUCCEEDED), job.error
    policy_entry = ModelEntry.objects.get(produced_by=dpo)
    assert comparison.provenance["policy"]["spec"] == policy_entry.spec
    assert comparison.provenance["reference"]["spec"] == base.spec
    assert comparison.provenance["reward_model"]["spec"] == rm_entry.spec
    assert comparison.rule == rule.to_dict() and comparison.beta == dpo.config["beta"]
    tokenizer = load_tokenizer(policy_entry.spec)
    expected = compare_on_splits(
        {
            "in_distribution": [r for r in rows if r["source"] != "forum.csv"],
            "shifted": [r for r in rows if r["source"] == "forum.csv"],
        },
        policy=ScoredSide(load_model(policy_entry.spec), tokenizer, 64),
        reference=load_model(base.spec),
        beta=comparison.beta,
        reward_model=ScoredSide(
            load_reward_model(rm_entry.spec, pad_token_id=tokenizer.pad_token_id), tokenizer, 64
        ),
    )
    for split in ("in_distribution", "shifted"):
        assert comparison.result[split]["n"] == expected[split]["n"]
        for side in ("dpo", "reward_model"):
            assert comparison.result[split][side] == pytest.approx(expected[split][side], abs=1e-5)
    assert comparison.result["drop"] == pytest.approx(expected["drop"])
    assert (comparison.result["in_distribution"]["n"], comparison.result["shifted"]["n"]) == (4, 4)
    page = manager_client.get(reverse("reward-comparison-detail", args=[project.pk, comparison.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="comparison-table"' in html and "source in forum.csv" in html
    assert f"{expected['shifted']['reward_model']['accuracy']:.3f}" in html
    listing = manager_client.get(reverse("reward-comparison-list", args=[project.pk])).content.decode()
    assert f"#{comparison.pk}" in listing
    assert (
        reverse("reward-comparison-list", args=[project.pk])
        in manager_client.get(reverse("job-list", args=[project.pk])).content.decode()
    )


def form_data(version, policy_job, reward_model, **rule):
    data = {"dataset_version": version.pk, "policy_job": policy_job.pk, "reward_model": reward_model.pk}
    data.update({"rule_kind": "source", "values": "forum.csv", "key": "", "threshold": "", "unit": "chars"})
    data.update(rule)
    return data


def _start(client, project, data):
    return client.post(reverse("reward-comparison-start", args=[project.pk]), data)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"values": ""}, "values"),
        ({"values": "nowhere.csv"}, "values"),
        ({"rule_kind": "metadata", "key": ""}, "key"),
        ({"rule_kind": "prompt_length", "threshold": ""}, "threshold"),
        ({"rule_kind": "prompt_length", "threshold": "100000"}, "threshold"),
        ({"rule_kind": "prompt_length", "threshold": "-3"}, "threshold"),
        ({"rule_kind": "wordcount"}, "rule_kind"),
    ],
)
def test_a_bad_rule_is_a_400_naming_its_field(project, manager_client, rule, field):
    version = version_with_sources(project)
    dpo, rm = (
        finished_job(project, version),
        finished_job(project, version, method="reward_model", kind=ModelKind.REWARD_MODEL),
    )
    response = _start(manager_client, project, form_data(version, dpo, rm.produced_model, **rule))
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert not RewardComparison.objects.exists() and not GenerationJob.objects.exists()


def test_a_job_without_implicit_reward_or_a_causal_lm_as_reward_model_is_refused(project, manager_client):
    version = version_with_sources(project)
    dpo = finished_job(project, version)
    rm_job = finished_job(project, version, method="reward_model", kind=ModelKind.REWARD_MODEL)
    response = _start(manager_client, project, form_data(version, rm_job, rm_job.produced_model))
    assert response.status_code == 400 and "policy_job" in response.context["form"].errors
    response = _start(manager_client, project, form_data(version, dpo, dpo.produced_model))
    assert response.status_code == 400 and "reward_model" in response.context["form"].errors
    response = _start(manager_client, project, {"policy_job": "x"})
    assert response.status_code == 400
    assert not RewardComparison.objects.exists()


def test_a_good_form_queues_one_comparison_job(project, manager_client, django_capture_on_commit_callbacks):
    version = version_with_sources(project)
    dpo = finished_job(project, version)
    rm = finished_job(project, version, method="reward_model", kind=ModelKind.REWARD_MODEL)
    with django_capture_on_commit_callbacks(execute=False):
        response = _start(manager_client, project, form_data(version, dpo, rm.produced_model))
    comparison = RewardComparison.objects.get()
    assert response.status_code == 302 and response.url.endswith(f"/reward-comparisons/{comparison.pk}/")
    assert comparison.job.kind == GenerationKind.REWARD_COMPARISON and comparison.job.state == JobState.QUEUED
    assert comparison.provenance["policy"]["spec"] == "local:/nowhere/final"
    page = manager_client.get(response.url)
    assert page.status_code == 200 and "source in forum.csv" in page.content.decode()


def test_another_users_project_is_a_404_and_an_annotator_cannot_start(
    project, manager, client, annotator_client, django_capture_on_commit_callbacks
):
    version = version_with_sources(project)
    dpo = finished_job(project, version)
    rm = finished_job(project, version, method="reward_model", kind=ModelKind.REWARD_MODEL)
    with django_capture_on_commit_callbacks(execute=False):
        comparison = reward_comparison_create(
            version=version,
            policy_job=dpo,
            reward_model=rm.produced_model,
            rule=ShiftRule(kind="source", values=("forum.csv",)),
            created_by=manager,
        )
    detail = reverse("reward-comparison-detail", args=[project.pk, comparison.pk])
    assert annotator_client.get(reverse("reward-comparison-list", args=[project.pk])).status_code == 200
    assert annotator_client.get(detail).status_code == 200
    response = _start(annotator_client, project, form_data(version, dpo, rm.produced_model))
    assert response.status_code == 403
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=ProjectFactory(), user=outsider, role="manager")
    client.force_login(outsider)
    assert client.get(reverse("reward-comparison-list", args=[project.pk])).status_code == 404
    assert client.get(detail).status_code == 404
    assert _start(client, project, form_data(version, dpo, rm.produced_model)).status_code == 404
    other = ProjectFactory()
    MembershipFactory(project=other, user=outsider, role="manager")
    assert client.get(reverse("reward-comparison-detail", args=[other.pk, comparison.pk])).status_code == 404
