"""The loop pages: who sees and starts loops, form errors by field, and a finished loop's timeline."""
# ruff: noqa: F811 - ``registry`` is test_loops' fixture, imported to be requested by name

import pytest

from jobs.models import JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.unit.test_loops import TRAIN, _create, registry  # noqa: F401
from training.models import Labeller, Loop
from training.services.loops import loop_create, loop_run


def _form(registry, **overrides):
    data = {
        "name": "a loop",
        "prompt_version": registry["version"].pk,
        "start_model": registry["policy"].pk,
        "reward_model": registry["reward"].pk,
        "labeller": "reward_model",
        "rounds": 1,
        "k": 3,
        "max_new_tokens": 8,
        "max_prompts": 6,
        "eval_prompts": 3,
        "learning_rate": 0.001,
        "max_steps": 2,
    }
    data.update(overrides)
    return data


@pytest.mark.django_db
def test_a_manager_starts_a_loop_and_a_bad_field_is_named(manager_client, project, registry):
    url = f"/projects/{project.pk}/loops/start/"
    response = manager_client.post(url, _form(registry, labeller="rso", k=4))
    assert response.status_code == 400
    assert response.context["form"].errors["rso_accept"]
    response = manager_client.post(url, _form(registry, method="hinge", learning_rate=-1))
    assert response.status_code == 400 and response.context["form"].errors["learning_rate"]
    assert not Loop.objects.exists()
    response = manager_client.post(url, _form(registry))
    loop = Loop.objects.get()
    assert response.status_code == 302 and response.url == f"/projects/{project.pk}/loops/{loop.pk}/"
    assert loop.settings["k"] == 3 and loop.settings["train"]["max_steps"] == 2
    assert loop.settings["train"]["method"] == "dpo" and loop.settings["pair_rule"] == "best_worst"


@pytest.mark.django_db
def test_annotators_see_loops_but_cannot_start_one_and_others_see_nothing(client, project, registry, manager):
    loop = loop_create(
        name="x",
        prompt_version=registry["version"],
        start_model=registry["policy"],
        reward_model=registry["reward"],
        labeller=Labeller.REWARD_MODEL,
        settings={"train": TRAIN},
        created_by=manager,
    )
    annotator = UserFactory()
    MembershipFactory(project=project, user=annotator, role="annotator")
    client.force_login(annotator)
    assert client.get(f"/projects/{project.pk}/loops/{loop.pk}/").status_code == 200
    page = client.get(f"/projects/{project.pk}/loops/").content.decode()
    assert "loop-form" not in page and f"/loops/{loop.pk}/" in page
    assert client.post(f"/projects/{project.pk}/loops/start/", _form(registry)).status_code == 403
    assert client.post(f"/projects/{project.pk}/loops/{loop.pk}/cancel/").status_code == 403
    outsider = UserFactory()
    MembershipFactory(project=ProjectFactory(), user=outsider, role="manager")
    client.force_login(outsider)
    assert client.get(f"/projects/{project.pk}/loops/{loop.pk}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_finished_loops_page_shows_its_rounds_charts_and_escaped_answers(
    manager_client, project, registry, manager
):
    loop = loop_create(
        name="<script>alert(1)</script>",
        prompt_version=registry["version"],
        start_model=registry["policy"],
        reward_model=registry["reward"],
        labeller=Labeller.REWARD_MODEL,
        settings={
            "rounds": 1,
            "k": 3,
            "max_new_tokens": 8,
            "max_prompts": 6,
            "eval_prompts": 3,
            "train": TRAIN,
        },
        created_by=manager,
    )
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    response = manager_client.get(f"/projects/{project.pk}/loops/{loop.pk}/")
    page = response.content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'id="round-1"' in page and 'data-stage="done"' in page and "ran 1 round" in page
    charts = response.context["charts"]["charts"]
    assert [c["x"] for c in charts if c["key"] == "mean_score"] == [[0, 1]]
    assert response.context["charts"]["labelling"]["pairs"][0] == loop.rounds.get().labelling["pairs"]
    poll = manager_client.get(f"/projects/{project.pk}/loops/{loop.pk}/", HTTP_HX_REQUEST="true")
    assert poll.status_code == 286 and 'id="loop-status"' in poll.content.decode()
    assert "Resume" not in page and "cancel-loop" not in page
    assert "round-consistency" not in page  # only a CREAM round has a consistency
    one = loop.rounds.get()
    one.labelling = {**one.labelling, "cream/consistency": 0.625}
    one.save(update_fields=["labelling"])
    response = manager_client.get(f"/projects/{project.pk}/loops/{loop.pk}/")
    assert '<b class="round-consistency">C 0.625</b>' in response.content.decode()
    assert response.context["charts"]["labelling"]["consistency"] == [0.625]


@pytest.mark.django_db
def test_cancel_and_resume_from_the_page(manager_client, project, registry, manager):
    loop = loop_create(
        name="x",
        prompt_version=registry["version"],
        start_model=registry["policy"],
        reward_model=registry["reward"],
        labeller=Labeller.REWARD_MODEL,
        settings={"train": TRAIN},
        created_by=manager,
    )
    manager_client.post(f"/projects/{project.pk}/loops/{loop.pk}/cancel/")
    loop.refresh_from_db()
    assert loop.state == JobState.CANCELLED
    assert "resume-loop" in manager_client.get(f"/projects/{project.pk}/loops/{loop.pk}/").content.decode()
    manager_client.post(f"/projects/{project.pk}/loops/{loop.pk}/resume/")
    manager_client.post(f"/projects/{project.pk}/loops/{loop.pk}/resume/")  # a second click changes nothing
    loop.refresh_from_db()
    assert loop.state == JobState.QUEUED and not loop.cancel_requested


@pytest.mark.django_db
def test_a_round_waiting_for_people_shows_how_many_judgments_are_in_and_links_to_annotate(
    manager_client, project, registry, manager
):
    from training.models import LoopRound, LoopStage

    loop = _create(registry, manager, Labeller.PEOPLE, rounds=1)
    Loop.objects.filter(pk=loop.pk).update(state=JobState.RUNNING, stage=LoopStage.LABEL, progress_done=1)
    LoopRound.objects.create(
        loop=loop,
        number=1,
        policy=registry["policy"],
        stage=LoopStage.LABEL,
        labelling={"tasks": 3, "judgments_needed": 3},
    )
    page = manager_client.get(f"/projects/{project.pk}/loops/{loop.pk}/").content.decode()
    assert "waiting for people: <b>1 of 3</b> judgments in on 3 tasks" in page
    assert f'href="/projects/{project.pk}/annotate/"' in page
