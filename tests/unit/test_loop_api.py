"""/api/jobs/loops: create (managers of the prompt version's project), list, get, cancel and resume."""
# ruff: noqa: F811 - ``registry`` is test_loops' fixture, imported to be requested by name

import pytest

from annotation.models import Membership
from jobs.models import JobState
from tests.factories import ProjectFactory, UserFactory
from tests.unit.test_loops import TRAIN, registry  # noqa: F401
from training.models import Labeller, Location, Loop, LoopRound, LoopStage, ModelEntry, ModelKind

SETTINGS = {"rounds": 1, "k": 3, "max_new_tokens": 8, "max_prompts": 6, "eval_prompts": 3, "train": TRAIN}


def _body(registry, **overrides) -> dict:
    body = {
        "name": "api loop",
        "prompt_version_id": registry["version"].pk,
        "start_model_id": registry["policy"].pk,
        "reward_model_id": registry["reward"].pk,
        "labeller": Labeller.REWARD_MODEL,
        "settings": SETTINGS,
    }
    return {**body, **overrides}


def _create(client, registry, **overrides):
    return client.post("/api/jobs/loops", _body(registry, **overrides), content_type="application/json")


def _locs(response) -> list[list]:
    return [error["loc"] for error in response.json()["detail"]]


def test_a_manager_creates_a_loop_and_lists_it(manager_client, registry, project):
    created = _create(manager_client, registry)
    assert created.status_code == 201, created.content
    body = created.json()
    loop = Loop.objects.get()
    assert body["id"] == loop.pk and body["project_id"] == project.pk
    assert (body["state"], body["stage"], body["round_number"], body["rounds"]) == (
        "queued",
        "baseline",
        0,
        [],
    )
    assert body["settings"]["rounds"] == 1 and body["settings"]["train"]["method"] == "dpo"
    listed = manager_client.get("/api/jobs/loops", {"project_id": project.pk})
    assert listed.status_code == 200 and [one["id"] for one in listed.json()] == [loop.pk]


def test_creation_names_the_bad_field(manager_client, registry):
    unusable = ModelEntry.objects.create(  # another project's reward model
        name="their-rm",
        kind=ModelKind.REWARD_MODEL,
        location=Location.LOCAL,
        path="/x",
        project=ProjectFactory(),
    )
    response = _create(manager_client, registry, reward_model_id=unusable.pk, name=" ")
    assert response.status_code == 422
    assert {("body", "reward_model_id"), ("body", "name")} <= {tuple(loc) for loc in _locs(response)}
    response = _create(manager_client, registry, start_model_id=registry["reward"].pk)
    assert response.status_code == 422 and _locs(response) == [["body", "start_model_id"]]
    assert "not a language model" in response.json()["detail"][0]["msg"]
    bad_settings = {**SETTINGS, "rounds": 0, "train": {**TRAIN, "method": "ppo"}}
    response = _create(manager_client, registry, settings=bad_settings)
    assert response.status_code == 422
    assert sorted(_locs(response)) == [
        ["body", "settings", "rounds"],
        ["body", "settings", "train", "method"],
    ]
    response = _create(manager_client, registry, labeller="oracle")
    assert response.status_code == 422 and "labeller" in _locs(response)[0]
    response = _create(manager_client, registry, settings={"train": "dpo"})
    assert response.status_code == 422 and "settings" in _locs(response)[0]
    assert not Loop.objects.exists()


def test_a_user_of_another_project_gets_404(manager_client, client, registry, project):
    loop = Loop.objects.get(pk=_create(manager_client, registry).json()["id"])
    outsider = UserFactory(username="outsider")
    Membership.objects.create(project=ProjectFactory(), user=outsider, role="manager")
    client.force_login(outsider)
    assert client.get(f"/api/jobs/loops/{loop.pk}").status_code == 404
    assert client.get("/api/jobs/loops", {"project_id": project.pk}).status_code == 404
    assert client.post(f"/api/jobs/loops/{loop.pk}/cancel").status_code == 404
    assert _create(client, registry).status_code == 404
    assert not Loop.objects.exclude(pk=loop.pk).exists()


def test_an_annotator_cannot_start_cancel_or_resume_a_loop(manager_client, registry, annotator, client):
    loop_id = _create(manager_client, registry).json()["id"]
    Membership.objects.create(project=registry["version"].project, user=annotator, role="annotator")
    client.force_login(annotator)
    assert _create(client, registry).status_code == 403
    assert client.post(f"/api/jobs/loops/{loop_id}/cancel").status_code == 403
    assert client.post(f"/api/jobs/loops/{loop_id}/resume").status_code == 403
    assert client.get(f"/api/jobs/loops/{loop_id}").json()["state"] == "queued"  # members read
    assert Loop.objects.count() == 1


def test_cancel_then_resume_and_a_second_resume_is_a_conflict(manager_client, registry):
    loop_id = _create(manager_client, registry).json()["id"]
    cancelled = manager_client.post(f"/api/jobs/loops/{loop_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    resumed = manager_client.post(f"/api/jobs/loops/{loop_id}/resume")
    assert resumed.status_code == 200
    assert (resumed.json()["state"], resumed.json()["cancel_requested"]) == ("queued", False)
    again = manager_client.post(f"/api/jobs/loops/{loop_id}/resume")
    assert again.status_code == 409 and "cancelled or failed" in again.json()["detail"]


@pytest.fixture
def finished_loop(manager_client, registry):
    """A loop as a finished run leaves it: a baseline with its rows, one round with examples."""
    loop = Loop.objects.get(pk=_create(manager_client, registry).json()["id"])
    figures = {"n": 3, "mean_score": 0.2, "win_rate": 0.5, "mean_kl": 0.1, "mean_length": 4.0}
    Loop.objects.filter(pk=loop.pk).update(
        state=JobState.SUCCEEDED,
        stage=LoopStage.DONE,
        round_number=1,
        result={"baseline": figures, "baseline_rows": [{"prompt": "p"}], "stopped": "ran 1 round"},
    )
    LoopRound.objects.create(
        loop=loop,
        number=1,
        stage=LoopStage.DONE,
        policy=registry["policy"],
        dataset_version=registry["version"],
        trained_model=registry["policy"],
        labelling={"pairs": 5},
        evaluation={**figures, "examples": [{"prompt": "p", "response": "r"}]},
    )
    return loop


def test_get_shows_rounds_without_bulky_rows_unless_asked(manager_client, finished_loop, registry):
    body = manager_client.get(f"/api/jobs/loops/{finished_loop.pk}").json()
    assert body["state"] == "succeeded" and body["stage"] == "done" and body["round_number"] == 1
    assert body["result"] == {"baseline": body["result"]["baseline"], "stopped": "ran 1 round"}
    assert {"progress_done", "progress_total", "percent", "labeller", "settings"} <= set(body)
    (one,) = body["rounds"]
    assert one["number"] == 1 and one["stage"] == "done" and one["policy_name"] == "tiny-llama"
    assert one["dataset_version_number"] == registry["version"].number and one["training_job_id"] is None
    assert one["trained_model_name"] == "tiny-llama" and one["labelling"] == {"pairs": 5}
    assert one["evaluation"]["win_rate"] == 0.5 and "examples" not in one["evaluation"]
    asked = manager_client.get(f"/api/jobs/loops/{finished_loop.pk}", {"examples": "true"}).json()
    assert asked["rounds"][0]["evaluation"]["examples"] == [{"prompt": "p", "response": "r"}]
