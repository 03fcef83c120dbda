"""Where a PPO/RTO job's prompts come from: the version, the project's items, or a list typed on the form or
sent to the API.  A list becomes the run's own ``prompts.jsonl`` (the version's held-out prompts after it),
the job trains on it (its rollouts sample those prompts), a bad line is a 422 naming it with nothing saved,
a clone starts from the same list, and a method that does not sample refuses a prompt source."""

import json
from pathlib import Path

import pytest
from django.urls import reverse

from annotation.models import Item
from jobs.models import JobState
from tests.training_support import dataset_version, launch_form_data, tiny_model_entry
from training.models import ModelKind, TrainingJob
from training.services.prompt_sources import MAX_PROMPT_CHARS, prompt_list_parse
from training.services.runner import training_job_run

from .test_ppo_jobs import PPO_SETTINGS, _entry, _reward_model

LIST = "Name a colour.\n\n  Count to three.  \n" + json.dumps(
    {"prompt": [{"role": "user", "content": "Say hello in French."}]}
)


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = str(tmp_path / "artifacts")
    settings.MODEL_CACHE = str(tmp_path / "cache")


def _ppo_form(client, project, base, version, reward, **overrides):
    url = reverse("job-new", args=[project.pk]) + "?method=ppo"
    page = client.get(url)
    data = launch_form_data(page.context, base, version, action="launch", reward_model=reward.pk)
    return url, {**data, **PPO_SETTINGS, **overrides}


def _rows(job) -> list[dict]:
    path = Path(job.config["train_file"])
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_list_parses_text_lines_and_json_lines_and_names_the_first_bad_one():
    assert prompt_list_parse(LIST) == [
        "Name a colour.",
        "Count to three.",
        [{"role": "user", "content": "Say hello in French."}],
    ]
    assert prompt_list_parse(["a", {"prompt": "b"}]) == ["a", "b"]
    for text, why in [
        ("ok\n{not json", "line 2: not valid JSON"),
        ("ok\nfine\n" + json.dumps({"text": "x"}), "line 3: expected prompt text"),
        ("x" * (MAX_PROMPT_CHARS + 1), "line 1: longer than"),
        (json.dumps({"prompt": [{"role": "user"}]}), "line 1: each message needs"),
        ("a\x00b", "NUL"),
        ("\n \n", "no prompts"),
    ]:
        with pytest.raises(ValueError, match=why):
            prompt_list_parse(text)


@pytest.mark.django_db(transaction=True)
def test_a_ppo_job_trains_on_a_typed_prompt_list_and_a_clone_starts_from_it(
    tmp_path, project, manager, manager_client
):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _reward_model(tmp_path, project, manager, version, base)
    url, data = _ppo_form(
        manager_client, project, base, version, reward, prompt_source="list", prompt_list=LIST
    )
    response = manager_client.post(url, data)
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get(method="ppo")
    assert Path(job.config["train_file"]) == Path(job.config["output_dir"]) / "prompts.jsonl"
    rows = _rows(job)
    train = [r for r in rows if r["split"] == "train"]
    assert [r["prompt"] for r in train][:2] == ["Name a colour.", "Count to three."]
    assert len(train) == 3 and {r["source"] for r in train} == {"list"}
    heldout = [r["prompt"] for r in rows if r["split"] == "test"]
    assert heldout == [e.row["prompt"] for e in version.examples.filter(split="test").order_by("pk")]
    assert job.total_steps == 4  # 3 prompts: two rollout batches, each trained for two PPO epochs

    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    sampled = {
        json.dumps(row["prompt"])
        for path in (Path(job.config["output_dir"]) / "samples").glob("step-*/rollouts.json")
        for row in json.loads(path.read_text())["rows"]
    }
    assert any("Name a colour." in p for p in sampled) and any("French" in p for p in sampled)

    detail = manager_client.get(reverse("job-detail", args=[project.pk, job.pk]))
    assert detail.context["prompt_source"] == "a list of prompts typed here"
    clone = manager_client.get(reverse("job-new", args=[project.pk]) + f"?method=ppo&clone={job.pk}")
    form = clone.context["form"]
    assert form.fields["prompt_source"].initial == "list"
    assert prompt_list_parse(form.fields["prompt_list"].initial) == prompt_list_parse(LIST)


def test_a_bad_line_is_a_422_naming_it_and_nothing_is_saved(tmp_path, project, manager_client):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _entry(tmp_path / "rm", "my-rm", ModelKind.REWARD_MODEL, project)
    url, data = _ppo_form(
        manager_client, project, base, version, reward, prompt_source="list", prompt_list="fine\n{oops"
    )
    response = manager_client.post(url, data)
    assert response.status_code == 422
    assert "line 2: not valid JSON" in response.context["form"].errors["prompt_list"][0]
    assert not TrainingJob.objects.exists()
    assert not (tmp_path / "artifacts" / "jobs").exists() or not any(
        (tmp_path / "artifacts" / "jobs").iterdir()
    )


def test_the_project_source_takes_every_item_even_unjudged_ones_and_a_version_without_prompts_is_fine(
    tmp_path, project, manager, manager_client
):
    version = dataset_version(project)
    version.examples.update(row={"prompt": "", "chosen": "a", "rejected": "b"})  # no prompts of its own
    Item.objects.create(project=project, prompt="An item nobody judged yet.", content_hash="i1")
    Item.objects.create(project=project, prompt="Another one.", content_hash="i2")
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _entry(tmp_path / "rm", "my-rm", ModelKind.REWARD_MODEL, project)
    url, data = _ppo_form(
        manager_client, project, base, version, reward, prompt_source="project", prompt_list="left in the box"
    )
    response = manager_client.post(url, data)
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get(method="ppo")
    train = [r["prompt"] for r in _rows(job) if r["split"] == "train"]
    assert train == ["An item nobody judged yet.", "Another one."]
    url, data = _ppo_form(manager_client, project, base, version, reward, prompt_source="version")
    response = manager_client.post(url, data)
    assert (
        response.status_code == 422 and "no prompts" in response.context["form"].errors["dataset_version"][0]
    )


def test_the_api_takes_a_list_of_prompts_and_refuses_a_source_for_methods_that_do_not_sample(
    tmp_path, project, manager_client
):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    reward = _entry(tmp_path / "rm", "my-rm", ModelKind.REWARD_MODEL, project)
    body = {
        "dataset_version_id": version.pk,
        "base_model_id": base.pk,
        "config": {"method": "ppo", **PPO_SETTINGS, "reward_model": reward.pk, "prompt_source": "list"},
    }
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "prompt_list"
    body["config"]["prompt_list"] = ["one", "two", "three", "four", "five"]
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 202, response.json()
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert len([r for r in _rows(job) if r["split"] == "train"]) == 5
    assert "prompts.jsonl" not in json.dumps(response.json())  # the server's path stays the server's
    body["config"] = {"method": "dpo", "max_steps": 2, "prompt_source": "list", "prompt_list": ["x"]}
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "prompt_source"
    body["config"] = {"method": "ppo", **PPO_SETTINGS, "reward_model": reward.pk, "prompt_source": "../etc"}
    response = manager_client.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "prompt_source"
