"""PPO vs DPO in the studio: on a seeded tiny dataset, a DPO job, a reward-model job and a PPO job against
that reward model train through the real services; a generation-queue job then compares the base, DPO
and PPO models on the version's held-out prompts and stores the engine's numbers with provenance, and the
page shows them in one table.  Bad input is a 400 naming the field, outsiders get 404, and the compare
view puts a DPO and a PPO run's counterpart metrics side by side."""

import pytest
from django.urls import reverse

from jobs.models import JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.engine.lm.models import load_model, load_tokenizer
from training.engine.lm.policy_eval import compare_policies
from training.engine.lm.rewards import load_reward_model
from training.models import (
    GenerationJob,
    GenerationKind,
    Location,
    ModelEntry,
    ModelKind,
    PolicyComparison,
    TrainingJob,
)
from training.services.generation import generation_job_run
from training.services.jobs import training_job_launch
from training.services.metrics import metrics_write_batch
from training.services.policy_comparison import heldout_prompts, policy_comparison_create
from training.services.runner import training_job_run


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2


def ppo_params(reward_model: ModelEntry) -> dict:
    """A tiny PPO job against ``reward_model`` (the launch service takes the entry's id and stores its
    spec, ``local:<the reward-model job's final folder>``, in the config)."""
    return {
        "method": "ppo",
        "reward_model": reward_model.pk,
        "batch_size": 4,
        "num_ppo_epochs": 2,
        "max_new_tokens": 6,
        "max_steps": 4,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.0,
        "save_steps": 2,
        "eval_steps": 2,
    }


def run(job) -> TrainingJob:
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    return job


@pytest.mark.django_db(transaction=True)
def test_a_comparison_job_stores_the_engines_numbers_and_the_page_shows_the_ppo_vs_dpo_table(
    tmp_path, project, manager, manager_client
):
    version = dataset_version(project, train=24, test=8)
    base = tiny_model_entry(tmp_path / "tiny")
    dpo = run(
        training_job_launch(
            params=tiny_params(tmp_path, learning_rate=1e-2), base_model=base, dataset_version=version
        )
    )
    rm = run(
        training_job_launch(
            params=tiny_params(tmp_path, method="reward_model"), base_model=base, dataset_version=version
        )
    )
    rm_entry = ModelEntry.objects.get(produced_by=rm)
    ppo = run(training_job_launch(params=ppo_params(rm_entry), base_model=base, dataset_version=version))
    assert ppo.config["reward_model"] == rm_entry.spec
    comparison = policy_comparison_create(
        version=version, dpo_job=dpo, ppo_job=ppo, reward_model=None, created_by=manager
    )
    assert comparison.reward_model == rm_entry  # the PPO job's own reward model by default
    generation_job_run(job_id=comparison.job_id)
    comparison.refresh_from_db()
    job = comparison.job
    assert (job.kind, job.state) == (GenerationKind.POLICY_COMPARISON, JobState.SUCCEEDED), job.error
    prov = comparison.provenance
    dpo_entry, ppo_entry = ModelEntry.objects.get(produced_by=dpo), ModelEntry.objects.get(produced_by=ppo)
    assert (prov["base"]["spec"], prov["dpo"]["spec"], prov["ppo"]["spec"]) == (
        base.spec,
        dpo_entry.spec,
        ppo_entry.spec,
    )
    assert prov["reward_model"]["spec"] == rm_entry.spec and prov["max_new_tokens"] == 6
    prompts = heldout_prompts(version=version)
    assert prompts and len(prompts) == len({p for p in prompts})
    tokenizer = load_tokenizer(base.spec)
    expected = compare_policies(
        prompts,
        tokenizer=tokenizer,
        base=load_model(base.spec),
        policies={"dpo": load_model(dpo_entry.spec), "ppo": load_model(ppo_entry.spec)},
        reward_model=load_reward_model(rm_entry.spec, pad_token_id=tokenizer.pad_token_id),
        max_new_tokens=6,
        max_prompt_length=ppo.config["max_prompt_length"],
        batch_size=3,  # other batches than the job's: the numbers do not depend on them
    )
    result = comparison.result
    assert result["prompts"] == expected["prompts"] == len(prompts)
    for name in ("base", "dpo", "ppo"):
        assert result["models"][name] == pytest.approx(expected["models"][name], abs=1e-4), name
    assert result["models"]["base"]["mean_kl"] == 0.0 and result["models"]["base"]["win_rate"] is None
    assert all(result["models"][name]["mean_kl"] > 0 for name in ("dpo", "ppo"))  # both moved off the base
    assert [e["prompt"] for e in result["examples"]] == prompts[:6]
    page = manager_client.get(reverse("policy-comparison-detail", args=[project.pk, comparison.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="comparison-table"' in html and 'id="comparison-examples"' in html
    for name in ("base", "dpo", "ppo"):
        assert f'id="row-{name}"' in html
        assert f"{expected['models'][name]['mean_score']:.3f}" in html
    assert f"{expected['models']['ppo']['win_rate']:.3f}" in html
    listing = manager_client.get(reverse("policy-comparison-list", args=[project.pk])).content.decode()
    assert f"#{comparison.pk}" in listing
    jobs_page = manager_client.get(reverse("job-list", args=[project.pk])).content.decode()
    assert reverse("policy-comparison-list", args=[project.pk]) in jobs_page
    compare = manager_client.get(reverse("job-compare", args=[project.pk]), {"jobs": [dpo.pk, ppo.pk]})
    assert compare.status_code == 200
    panels = {p["id"]: p for p in compare.context["counterparts"]}
    names = {t["name"] for t in panels["reward"]["traces"]}
    assert {f"job {ppo.pk} · ppo · objective/scores", f"job {dpo.pk} · dpo · rewards/margins"} <= names


def finished_job(project, version, *, method="dpo", kind=ModelKind.CAUSAL_LM, base=None, config=None):
    """A succeeded job row with a registered model (no training: for the form and access tests)."""
    base = (
        base
        or ModelEntry.objects.get_or_create(
            name="base", defaults={"location": Location.LOCAL, "path": "/nowhere"}
        )[0]
    )
    job = TrainingJob.objects.create(
        method=method,
        config=config or {"beta": 0.1, "max_length": 64},
        base_model=base,
        dataset_version=version,
        state=JobState.SUCCEEDED,
    )
    ModelEntry.objects.create(
        name=f"trained-{method}-{job.pk}",
        kind=kind,
        location=Location.LOCAL,
        path=f"/nowhere/final-{job.pk}",
        project=project,
        produced_by=job,
    )
    return job


@pytest.fixture
def setup(project):
    """A version, a finished DPO job, a reward model and a PPO job that trained against it."""
    version = dataset_version(project)
    dpo = finished_job(project, version)
    rm = finished_job(project, version, method="reward_model", kind=ModelKind.REWARD_MODEL)
    config = {"reward_model": rm.produced_model.spec, "max_new_tokens": 8, "max_prompt_length": 64}
    ppo = finished_job(project, version, method="ppo", config=config)
    return version, dpo, ppo, rm.produced_model


def form_data(version, dpo, ppo, reward_model=None, **extra):
    data = {"dataset_version": version.pk, "dpo_job": dpo.pk, "ppo_job": ppo.pk}
    data.update(reward_model=reward_model.pk if reward_model else "", max_new_tokens="")
    data.update(extra)
    return data


def _start(client, project, data):
    return client.post(reverse("policy-comparison-start", args=[project.pk]), data)


def test_a_good_form_queues_one_comparison_with_the_ppo_jobs_reward_model(
    project, manager_client, setup, django_capture_on_commit_callbacks
):
    version, dpo, ppo, rm = setup
    with django_capture_on_commit_callbacks(execute=False):
        response = _start(manager_client, project, form_data(version, dpo, ppo, max_new_tokens="5"))
    comparison = PolicyComparison.objects.get()
    assert response.status_code == 302 and response.url.endswith(f"/policy-comparisons/{comparison.pk}/")
    assert comparison.job.kind == GenerationKind.POLICY_COMPARISON and comparison.job.state == JobState.QUEUED
    assert comparison.reward_model == rm and comparison.provenance["max_new_tokens"] == 5
    page = manager_client.get(response.url)
    assert page.status_code == 200 and f"job #{comparison.job_id}" in page.content.decode()


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("dpo_is_ppo", "dpo_job"),
        ("ppo_is_dpo", "ppo_job"),
        ("other_version", "ppo_job"),
        ("other_base", "ppo_job"),
        ("causal_lm_as_rm", "reward_model"),
        ("rm_not_registered", "reward_model"),
        ("not_succeeded", "dpo_job"),
        ("zero_tokens", "max_new_tokens"),
        ("too_many_tokens", "max_new_tokens"),
        ("garbage", "dpo_job"),
    ],
)
def test_bad_input_is_a_400_naming_its_field(project, manager_client, setup, case, field):
    version, dpo, ppo, rm = setup
    data = form_data(version, dpo, ppo)
    if case == "dpo_is_ppo":
        data["dpo_job"] = ppo.pk
    elif case == "ppo_is_dpo":
        data["ppo_job"] = dpo.pk
    elif case == "other_version":
        data["ppo_job"] = finished_job(project, dataset_version(project), method="ppo", config=ppo.config).pk
    elif case == "other_base":
        other = ModelEntry.objects.create(name="other-base", location=Location.LOCAL, path="/elsewhere")
        data["ppo_job"] = finished_job(project, version, method="ppo", base=other, config=ppo.config).pk
    elif case == "causal_lm_as_rm":
        data["reward_model"] = dpo.produced_model.pk
    elif case == "rm_not_registered":
        rm.delete()
    elif case == "not_succeeded":
        TrainingJob.objects.filter(pk=dpo.pk).update(state=JobState.FAILED)
    elif case == "zero_tokens":
        data["max_new_tokens"] = "0"
    elif case == "too_many_tokens":
        data["max_new_tokens"] = "100000"
    else:
        data["dpo_job"] = "x"
    response = _start(manager_client, project, data)
    assert response.status_code == 400
    assert field in response.context["form"].errors, response.context["form"].errors
    assert not PolicyComparison.objects.exists() and not GenerationJob.objects.exists()


def test_a_version_without_held_out_prompts_is_a_form_error(project, manager_client):
    version = dataset_version(project, train=8, test=0)
    dpo = finished_job(project, version)
    rm = finished_job(project, version, method="reward_model", kind=ModelKind.REWARD_MODEL)
    ppo = finished_job(project, version, method="ppo", config={"reward_model": rm.produced_model.spec})
    response = _start(manager_client, project, form_data(version, dpo, ppo))
    assert response.status_code == 400 and "no test prompts" in response.content.decode()


def test_another_users_project_is_a_404_and_an_annotator_cannot_start(
    project, manager, client, annotator_client, setup, django_capture_on_commit_callbacks
):
    version, dpo, ppo, rm = setup
    with django_capture_on_commit_callbacks(execute=False):
        comparison = policy_comparison_create(
            version=version, dpo_job=dpo, ppo_job=ppo, reward_model=rm, created_by=manager
        )
    detail = reverse("policy-comparison-detail", args=[project.pk, comparison.pk])
    assert annotator_client.get(reverse("policy-comparison-list", args=[project.pk])).status_code == 200
    assert annotator_client.get(detail).status_code == 200
    assert _start(annotator_client, project, form_data(version, dpo, ppo)).status_code == 403
    outsider = UserFactory(username="outsider")
    other = ProjectFactory()
    MembershipFactory(project=other, user=outsider, role="manager")
    client.force_login(outsider)
    assert client.get(reverse("policy-comparison-list", args=[project.pk])).status_code == 404
    assert client.get(detail).status_code == 404
    assert _start(client, project, form_data(version, dpo, ppo)).status_code == 404
    assert client.get(reverse("policy-comparison-detail", args=[other.pk, comparison.pk])).status_code == 404
    # the outsider's own project cannot pick this project's jobs either
    response = _start(client, other, form_data(version, dpo, ppo))
    assert response.status_code == 400 and {"dataset_version", "dpo_job"} <= set(
        response.context["form"].errors
    )


def test_model_output_is_escaped_on_the_page(project, manager, manager_client, setup):
    version, dpo, ppo, rm = setup
    comparison = policy_comparison_create(
        version=version, dpo_job=dpo, ppo_job=ppo, reward_model=rm, created_by=manager
    )
    row = {"response": "<script>alert(1)</script>", "score": 0.5, "kl": 0.1, "length": 3, "ended": True}
    models = {n: {"n": 1, "mean_score": 0.5, "win_rate": 0.5, "mean_kl": 0.1} for n in ("base", "dpo", "ppo")}
    result = {"prompts": 1, "dropped": 0, "models": models}
    result["examples"] = [{"prompt": "<b>hi</b>", "base": row, "dpo": row, "ppo": row}]
    PolicyComparison.objects.filter(pk=comparison.pk).update(result=result)
    GenerationJob.objects.filter(pk=comparison.job_id).update(state=JobState.SUCCEEDED)
    html = manager_client.get(reverse("policy-comparison-detail", args=[project.pk, comparison.pk]))
    html = html.content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>hi</b>" not in html


def test_compare_overlays_a_dpo_and_a_ppo_run_and_lists_fields_only_one_method_has(
    project, manager_client, setup
):
    version, dpo, ppo, rm = setup
    metrics_write_batch(
        job_id=dpo.pk,
        points=[
            (1, "loss", 0.69, 1.0),
            (1, "rewards/margins", 0.1, 1.0),
            (2, "eval/rewards/accuracies", 0.7, 2.0),
        ],
    )
    metrics_write_batch(
        job_id=ppo.pk,
        points=[(1, "loss", 0.3, 1.0), (1, "objective/scores", 0.2, 1.0), (1, "objective/kl", 0.0, 1.0)],
    )
    page = manager_client.get(reverse("job-compare", args=[project.pk]), {"jobs": f"{dpo.pk},{ppo.pk}"})
    assert page.status_code == 200
    ctx = page.context
    assert ctx["metric"] == "loss" and ctx["shared_names"] == ["loss"]
    assert {t["name"]: t["y"] for t in ctx["traces"]} == {
        f"job {dpo.pk} · dpo": [0.69],
        f"job {ppo.pk} · ppo": [0.3],
    }
    assert ctx["diffs"]["reward_model"][dpo.pk] is not None and "beta" in ctx["diffs"]
    html = page.content.decode()
    assert "not a field of this method" in html and 'id="counterparts"' in html
    panels = {p["id"]: p for p in ctx["counterparts"]}
    reward = {t["name"]: (t["yaxis"], t["y"]) for t in panels["reward"]["traces"]}
    assert reward == {
        f"job {ppo.pk} · ppo · objective/scores": ("y", [0.2]),
        f"job {dpo.pk} · dpo · rewards/margins": ("y2", [0.1]),
    }
    heldout = {t["name"] for t in panels["heldout"]["traces"]}
    assert heldout == {f"job {dpo.pk} · dpo · eval/rewards/accuracies"}
    only_one = manager_client.get(
        reverse("job-compare", args=[project.pk]), {"jobs": [ppo.pk], "metric": "nope"}
    )
    assert only_one.status_code == 200 and only_one.context["counterparts"] == []
    assert only_one.context["missing"] == [f"job {ppo.pk} · ppo"]
