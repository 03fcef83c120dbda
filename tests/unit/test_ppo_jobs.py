"""PPO and RTO in the studio: the launch form offers registry entries (never a typed path) for the reward,
value and DPO models and refuses other picks naming the field; the API takes entry ids only; a tiny reward
model then a tiny PPO job run through the real services, and the job page plots TRL's PPO names and shows
the latest rollouts, the evaluation page the base and trained generations; an RTO job runs on a finished
DPO job; another user's job pages are 404."""

import json

import pytest
from django.urls import reverse

from jobs.models import JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.training_support import dataset_version, launch_form_data, tiny_model_entry, tiny_params
from training.models import Location, MetricPoint, ModelEntry, ModelKind, TrainingJob
from training.services.jobs import training_job_launch
from training.services.runner import training_job_run

PPO_SETTINGS = {
    "batch_size": 2,
    "num_mini_batches": 1,
    "num_ppo_epochs": 2,
    "max_new_tokens": 6,
    "max_prompt_length": 64,
    "epochs": 1,
    "max_steps": 4,
    "warmup_ratio": 0.0,
    "save_steps": 2,
    "eval_steps": 2,
    "rollouts_shown": 3,
}


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2


def _entry(folder, name: str, kind: str, project=None) -> ModelEntry:
    """A registered model whose folder looks loadable to the launch checks (config.json present)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return ModelEntry.objects.create(
        name=name, location=Location.LOCAL, path=str(folder), kind=kind, project=project
    )


def _dpo_job(project, base, *, state=JobState.SUCCEEDED, method="dpo", folder=None) -> TrainingJob:
    """A DPO-family job in ``state`` that registered a model (no training: the form only reads the rows)."""
    job = TrainingJob.objects.create(
        method=method,
        config={"model": base.spec},
        run_token=f"t{TrainingJob.objects.count()}",
        base_model=base,
        dataset_version=dataset_version(project),
        state=state,
    )
    entry = _entry(folder, f"job-{job.pk}-{method}", ModelKind.CAUSAL_LM, project)
    entry.produced_by, entry.base = job, base
    entry.save()
    return job


def _form_page(client, project, method):
    url = reverse("job-new", args=[project.pk]) + f"?method={method}"
    return url, client.get(url)


@pytest.fixture
def registry(tmp_path, project):
    """Reward models (mine, another project's), a causal LM, DPO-family models (finished, failed, another
    project's) and a finished reward-model job's model (not DPO)."""
    other = ProjectFactory(name="Other")
    base = tiny_model_entry(tmp_path / "tiny")
    finished = _dpo_job(project, base, folder=tmp_path / "dpo")
    return {
        "base": base,
        "reward": _entry(tmp_path / "rm", "my-rm", ModelKind.REWARD_MODEL, project),
        "global_reward": _entry(tmp_path / "grm", "admin-rm", ModelKind.REWARD_MODEL),
        "foreign_reward": _entry(tmp_path / "frm", "their-rm", ModelKind.REWARD_MODEL, other),
        "lm": _entry(tmp_path / "lm", "some-lm", ModelKind.CAUSAL_LM),
        "dpo": finished.produced_model,
        "dpo_job": finished,
        "failed_dpo": _dpo_job(project, base, state=JobState.FAILED, folder=tmp_path / "f").produced_model,
        "foreign_dpo": _dpo_job(other, base, folder=tmp_path / "o").produced_model,
        "rm_job_model": _dpo_job(project, base, method="reward_model", folder=tmp_path / "r").produced_model,
    }


def _post(client, project, method, registry, **overrides):
    url, page = _form_page(client, project, method)
    version = dataset_version(project)
    data = launch_form_data(page.context, registry["base"], version, action="preview", **PPO_SETTINGS)
    data.update(overrides)
    return client.post(url, data)


def test_the_ppo_form_offers_only_reward_models_the_user_may_use(manager_client, project, registry):
    _, page = _form_page(manager_client, project, "ppo")
    form = page.context["form"]
    offered = {e.name for e in form.fields["reward_model"].queryset}
    assert offered == {"my-rm", "admin-rm"}
    assert {e.name for e in form.fields["value_model"].queryset} == offered
    assert not form.fields["value_model"].required and form.fields["reward_model"].required
    assert "dpo_model" not in form.fields and "dpo_reference" not in form.fields
    assert {e.name for e in form.fields["base_model"].queryset} >= {"tiny-llama", "some-lm"}
    assert not {"my-rm", "admin-rm"} & {e.name for e in form.fields["base_model"].queryset}
    html = page.content.decode()
    assert '<select name="reward_model"' in html and "same as the reward model" in html
    assert 'name="dpo_reference"' not in html and "their-rm" not in html


def test_the_rto_form_offers_only_models_of_finished_dpo_jobs_with_their_reference(
    manager_client, project, registry
):
    _, page = _form_page(manager_client, project, "rto")
    form = page.context["form"]
    assert list(form.fields["dpo_model"].queryset) == [registry["dpo"]]
    assert "dpo_reference" not in form.fields
    assert f"reference {registry['base'].name}" in page.content.decode()


@pytest.mark.parametrize(
    ("method", "field", "pick"),
    [
        ("ppo", "reward_model", "lm"),
        ("ppo", "reward_model", "foreign_reward"),
        ("ppo", "value_model", "lm"),
        ("rto", "dpo_model", "failed_dpo"),
        ("rto", "dpo_model", "foreign_dpo"),
        ("rto", "dpo_model", "rm_job_model"),
        ("rto", "dpo_model", "reward"),
    ],
)
def test_a_refused_model_pick_names_the_field(manager_client, project, registry, method, field, pick):
    fields = {"reward_model": registry["reward"].pk, field: registry[pick].pk}
    if method == "rto" and field != "dpo_model":
        fields["dpo_model"] = registry["dpo"].pk
    response = _post(manager_client, project, method, registry, **fields)
    assert response.status_code == 422
    assert list(response.context["form"].errors) == [field]


def test_the_built_config_holds_the_entries_specs_and_the_dpo_jobs_reference(
    manager_client, project, registry
):
    response = _post(manager_client, project, "ppo", registry, reward_model=registry["reward"].pk)
    assert response.status_code == 200, response.context["form"].errors
    config = response.context["form"].config
    assert config["reward_model"] == registry["reward"].spec and config["value_model"] is None
    assert config["model"] == registry["base"].spec
    response = _post(
        manager_client,
        project,
        "rto",
        registry,
        reward_model=registry["reward"].pk,
        value_model=registry["global_reward"].pk,
        dpo_model=registry["dpo"].pk,
        dpo_reference="local:/etc",  # not a field: the server sets it from the DPO job
    )
    assert response.status_code == 200, response.context["form"].errors
    config = response.context["form"].config
    assert config["value_model"] == registry["global_reward"].spec
    assert config["dpo_model"] == registry["dpo"].spec
    assert config["dpo_reference"] == registry["dpo_job"].base_model.spec


def test_a_version_without_prompts_is_refused_for_ppo(manager_client, project, registry):
    url, page = _form_page(manager_client, project, "ppo")
    version = dataset_version(project)
    version.examples.update(row={"prompt": "", "chosen": "a", "rejected": "b"})
    data = launch_form_data(
        page.context, registry["base"], version, action="preview", reward_model=registry["reward"].pk
    )
    response = manager_client.post(url, {**data, **PPO_SETTINGS})
    assert response.status_code == 422
    assert "no prompts" in response.context["form"].errors["dataset_version"][0]


def test_the_api_takes_model_ids_never_paths(manager_client, project, registry):
    version = dataset_version(project)
    body = {
        "dataset_version_id": version.pk,
        "base_model_id": registry["base"].pk,
        "config": {"method": "ppo", **PPO_SETTINGS, "reward_model": f"local:{registry['reward'].path}"},
    }
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 422
    assert [d["loc"][-1] for d in response.json()["detail"]] == ["reward_model"]
    body["config"]["reward_model"] = registry["lm"].pk
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 422 and "not a reward model" in response.json()["detail"][0]["msg"]
    body["config"].update(
        method="rto", reward_model=registry["reward"].pk, dpo_model=registry["dpo"].pk, dpo_reference="/x"
    )
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 202, response.json()
    shown = response.json()["config"]
    assert shown["reward_model"] == registry["reward"].pk and shown["dpo_model"] == registry["dpo"].pk
    assert shown["value_model"] is None and "dpo_reference" not in shown
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.config["dpo_reference"] == registry["base"].spec and "/x" not in json.dumps(job.config)


def _reward_model(tmp_path, project, manager, version, base) -> ModelEntry:
    params = tiny_params(tmp_path, method="reward_model")
    job = training_job_launch(params=params, base_model=base, dataset_version=version, created_by=manager)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    return ModelEntry.objects.get(produced_by=job)


@pytest.mark.django_db(transaction=True)
def test_ppo_on_a_trained_reward_model_shows_its_panels_rollouts_and_evaluation(
    tmp_path, project, manager, manager_client
):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _reward_model(tmp_path, project, manager, version, base)
    url, page = _form_page(manager_client, project, "ppo")
    data = launch_form_data(page.context, base, version, action="launch", reward_model=reward.pk)
    response = manager_client.post(url, {**data, **PPO_SETTINGS, "learning_rate": 0.001})
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get(method="ppo")
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    names = set(MetricPoint.objects.filter(job=job).values_list("name", flat=True))
    assert {"objective/kl", "objective/scores", "policy/clipfrac_avg", "eval/objective/scores"} <= names

    metrics = manager_client.get(reverse("job-metrics", args=[project.pk, job.pk]))
    points = json.loads(metrics.content, parse_constant=lambda c: pytest.fail(f"{c} in the metrics JSON"))
    assert len(points["points"]["loss"]) == 4
    detail = manager_client.get(reverse("job-detail", args=[project.pk, job.pk]))
    panels = detail.context["chart_config"]["panels"]
    assert any("objective/scores" in p["metrics"] for p in panels)
    assert not any("rewards/margins" in p["metrics"] for p in panels)
    html = detail.content.decode()
    assert 'id="chart-policy"' in html and 'id="rollout-table"' in html
    # one sample snapshot per rollout batch (and step 0), folded away from the checkpoints and models
    snapshots = detail.context["sample_count"]
    assert snapshots >= 2 and f"Sample snapshots ({snapshots})" in html
    rollouts = detail.context["rollouts"]
    assert rollouts["step"] == 3 and len(rollouts["rows"]) == 2  # batch 1 (of 2 prompts), for step 3
    assert rollouts["rows"][0]["prompt"] in html.replace("&#x27;", "'")
    fragment = manager_client.get(
        reverse("job-detail", args=[project.pk, job.pk]) + "?part=rollouts", headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 286 and b'id="rollout-table"' in fragment.content
    assert b'id="job-progress"' not in fragment.content

    evaluation = manager_client.get(reverse("job-evaluation", args=[project.pk, job.pk]))
    assert evaluation.status_code == 200
    report = evaluation.context["report"]
    assert report["kind"] == "policy" and report["base_step"] == 0 and report["trained_step"] == 4
    assert len(report["generations"]) == 8  # the held-out prompts
    first = report["generations"][0]
    assert {first["base_score"], first["trained_score"]} != {None} and abs(first["base_kl"]) < 1e-4
    html = evaluation.content.decode()
    assert html.count('class="base-response"') == 8 and html.count('class="trained-response"') == 8
    assert 'id="score-histogram"' in html and "job_evaluation.js" in html
    assert [t["name"] for t in report["histogram"]] == ["base", "trained"]
    assert len(report["histogram"][0]["x"]) == 8


@pytest.mark.django_db(transaction=True)
def test_an_rto_job_runs_on_a_finished_dpo_job(tmp_path, project, manager, manager_client):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _reward_model(tmp_path, project, manager, version, base)
    dpo = training_job_launch(
        params=tiny_params(tmp_path), base_model=base, dataset_version=version, created_by=manager
    )
    assert training_job_run(job_id=dpo.pk) == JobState.SUCCEEDED
    url, page = _form_page(manager_client, project, "rto")
    assert [e.produced_by_id for e in page.context["form"].fields["dpo_model"].queryset] == [dpo.pk]
    data = launch_form_data(
        page.context, base, version, action="launch", reward_model=reward.pk, dpo_model=dpo.produced_model.pk
    )
    response = manager_client.post(url, {**data, **PPO_SETTINGS, "learning_rate": 0.001})
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get(method="rto")
    assert job.config["dpo_model"] == dpo.produced_model.spec and job.config["dpo_reference"] == base.spec
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    dense = MetricPoint.objects.filter(job=job, name="objective/dense_reward")
    assert dense.count() == 4 and any(p.value != 0 for p in dense)
    detail = manager_client.get(reverse("job-detail", args=[project.pk, job.pk]))
    assert b"dense DPO reward" in detail.content and b'id="rollout-table"' in detail.content


@pytest.mark.django_db(transaction=True)
def test_another_users_ppo_job_pages_are_404(tmp_path, project, manager, client):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _reward_model(tmp_path, project, manager, version, base)
    params = {"method": "ppo", **PPO_SETTINGS, "reward_model": reward.pk}
    job = training_job_launch(params=params, base_model=base, dataset_version=version, created_by=manager)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    stranger = UserFactory(username="stranger")
    MembershipFactory(project=ProjectFactory(name="Theirs"), user=stranger, role="manager")
    client.force_login(stranger)
    detail = reverse("job-detail", args=[project.pk, job.pk])
    for url in (detail, detail + "?part=rollouts", reverse("job-evaluation", args=[project.pk, job.pk])):
        assert client.get(url).status_code == 404, url
    _, page = _form_page(client, project, "ppo")
    assert page.status_code == 404


def test_ppo_and_rto_get_trls_panels_and_other_methods_keep_theirs():
    from training.charts import PANELS, REWARD_MODEL_PANELS, chart_panels

    ppo = {m for p in chart_panels(method="ppo") for m in p["metrics"]}
    assert {"objective/kl", "policy/approxkl_avg", "loss/value_avg", "val/ratio"} <= ppo
    assert "throughput/rollout_tokens_per_s" in ppo and "objective/dense_reward" not in ppo
    assert "objective/dense_reward" in {m for p in chart_panels(method="rto") for m in p["metrics"]}
    assert [p["id"] for p in chart_panels(method="dpo")] == [p[0] for p in PANELS]
    assert [p["id"] for p in chart_panels(model_kind="reward_model", method="reward_model")] == [
        p[0] for p in REWARD_MODEL_PANELS
    ]


def test_the_score_histogram_puts_both_sides_on_the_same_bins():
    from training.charts import score_histogram

    base, trained = score_histogram(base=[0.0, 1.0], trained=[2.0])
    assert base["xbins"] == trained["xbins"] and base["xbins"]["start"] == 0.0
    assert score_histogram(base=[], trained=[])[0]["x"] == []


def test_rollout_text_is_escaped_and_malformed_rows_are_dropped(manager_client, project, registry):
    from training.services.artifacts import Digests, artifact_record
    from training.services.paths import job_dir

    params = {"method": "ppo", **PPO_SETTINGS, "reward_model": registry["reward"].pk}
    version = dataset_version(project)
    job = training_job_launch(params=params, base_model=registry["base"], dataset_version=version)
    folder = job_dir(job) / "samples" / "step-1"
    folder.mkdir(parents=True)
    rows = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "response": "<script>alert(1)</script>",
            "score": 1.5,
        },
        "not a row",
        {"prompt": "x" * 10_000, "response": None, "score": "NaN", "kl": float("nan"), "length": True},
    ]
    (folder / "rollouts.json").write_text(json.dumps({"rollout_batch": 0, "rows": rows}))
    artifact_record(job=job, path=folder, digests=Digests())
    page = manager_client.get(reverse("job-detail", args=[project.pk, job.pk]))
    shown = page.context["rollouts"]["rows"]
    assert len(shown) == 2 and shown[0]["prompt"] == "user: hi" and len(shown[1]["prompt"]) == 4000
    assert shown[1]["score"] is None and shown[1]["kl"] is None and shown[1]["length"] is None
    assert b"<script>alert(1)" not in page.content and b"&lt;script&gt;alert(1)" in page.content
