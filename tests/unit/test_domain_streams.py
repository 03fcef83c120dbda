"""Preference training across domains in the studio (``training/services/domain_streams.py``): what a
stream accepts, one run to its end on the tiny model (three forgetting matrices, no server folders in the
result), cancelling, and the pages."""

import pytest
from django.core.exceptions import ValidationError

from annotation.services.versions import dataset_version_from_rows
from jobs.models import JobState
from tests.factories import MembershipFactory, UserFactory
from tests.training_support import tiny_model_entry
from training.engine.cross_domain import domain_rows
from training.models import DomainStream
from training.services.domain_streams import domain_stream_cancel, domain_stream_create, domain_stream_run

QUICK = {"max_steps": 6, "checkpoint_every": 3, "batch_size": 8, "learning_rate": 2e-3}


@pytest.fixture
def streams(tmp_path, settings, project, manager):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.5
    versions = []
    for i, name in enumerate(("A", "B")):
        rows = domain_rows(24, seed=i, domain=name, split="train") + domain_rows(
            8, seed=i + 50, domain=name, split="test"
        )
        versions.append(
            dataset_version_from_rows(
                project=project,
                rows=[(r["split"], r) for r in rows],
                provenance={"source": "test", "domain": name},
                created_by=manager,
            )
        )
    return {"versions": versions, "base": tiny_model_entry(tmp_path / "base")}


def _create(streams, manager, project, **overrides):
    values = {
        "name": "A then B",
        "project": project,
        "base_model": streams["base"],
        "versions": streams["versions"],
        "settings": QUICK,
        "created_by": manager,
    }
    return domain_stream_create(**{**values, **overrides})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": " "}, "name"),
        ({"base_model": None}, "base_model"),
        ({"settings": {**QUICK, "colour": "red"}}, "settings.colour"),
        ({"settings": {**QUICK, "weights": [1.0]}}, "settings.weights"),
        ({"settings": {**QUICK, "max_steps": 0}}, "settings.max_steps"),
        ({"settings": ["max_steps"]}, "settings"),
    ],
)
def test_a_stream_names_what_it_cannot_run_with(streams, manager, project, overrides, field):
    with pytest.raises(ValidationError) as bad:
        _create(streams, manager, project, **overrides)
    assert field in bad.value.message_dict


@pytest.mark.django_db
def test_a_stream_needs_two_versions_with_held_out_rows(streams, manager, project):
    with pytest.raises(ValidationError) as bad:
        _create(streams, manager, project, versions=streams["versions"][:1])
    assert "versions" in bad.value.message_dict
    thin = dataset_version_from_rows(
        project=project,
        rows=[("train", {"prompt": "p", "chosen": "a", "rejected": "b"})],
        provenance={"source": "test"},
    )
    with pytest.raises(ValidationError) as bad:
        _create(streams, manager, project, versions=[streams["versions"][0], thin])
    assert "held-out" in bad.value.message_dict["versions"][0]


@pytest.mark.django_db(transaction=True)
def test_a_stream_trains_every_method_and_records_its_forgetting_matrices(streams, manager, project, client):
    stream = _create(streams, manager, project)
    assert stream.progress_total == 6 and stream.state == JobState.QUEUED
    domain_stream_run(stream_id=stream.pk)
    stream.refresh_from_db()
    assert stream.state == JobState.SUCCEEDED, stream.traceback
    names = [f"v{v.number}" for v in streams["versions"]]
    for key in ("sequential", "ofs", "cofs"):
        matrix = stream.result[key]
        assert matrix["domains"] == names and len(matrix["accuracy"]) == 2
        assert all(0 <= a <= 1 for row in matrix["accuracy"] for a in row)
    assert "tmp" not in str(stream.result) and "artifacts" not in str(stream.result)  # no server folders
    assert stream.progress_done == 6 and stream.method == ""
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/domains/{stream.pk}/")
    html = page.content.decode()
    assert page.status_code == 200 and 'id="forgetting"' in html and 'data-method="cofs"' in html
    assert [c["key"] for c in page.context["charts"]] == ["sequential", "ofs", "cofs"]
    assert page.context["rows"][0]["cells"][0]["kept"] == stream.result["sequential"]["accuracy"][-1][0]


@pytest.mark.django_db
def test_a_queued_stream_is_cancelled_at_once_and_never_runs(streams, manager, project):
    stream = domain_stream_cancel(stream=_create(streams, manager, project))
    assert stream.state == JobState.CANCELLED
    domain_stream_run(stream_id=stream.pk)
    assert DomainStream.objects.get(pk=stream.pk).state == JobState.CANCELLED


@pytest.mark.django_db
def test_managers_start_streams_from_the_form_and_others_see_nothing(streams, manager, project, client):
    client.force_login(manager)
    form = {"name": "from the form", "base_model": streams["base"].pk, "max_steps": 6, "weights": "1, 1"}
    bad = client.post(
        f"/projects/{project.pk}/domains/start/", {**form, "versions": [streams["versions"][0].pk]}
    )
    assert bad.status_code == 400 and "at least two" in bad.content.decode()
    good = client.post(
        f"/projects/{project.pk}/domains/start/", {**form, "versions": [v.pk for v in streams["versions"]]}
    )
    stream = DomainStream.objects.get(name="from the form")
    assert good.status_code == 302 and stream.settings["weights"] == [1.0, 1.0]
    annotator = UserFactory(username="member")
    MembershipFactory(project=project, user=annotator, role="annotator")
    client.force_login(annotator)
    assert client.get(f"/projects/{project.pk}/domains/").status_code == 200
    assert client.post(f"/projects/{project.pk}/domains/start/", form).status_code == 403
    client.force_login(UserFactory(username="outsider"))
    assert client.get(f"/projects/{project.pk}/domains/{stream.pk}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_running_stream_stops_at_the_next_step_once_cancelled(streams, manager, project):
    import threading
    import time

    from django.db import connections

    stream = _create(streams, manager, project)

    def run():
        try:
            domain_stream_run(stream_id=stream.pk)
        finally:
            connections.close_all()

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while DomainStream.objects.get(pk=stream.pk).progress_done < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    domain_stream_cancel(stream=stream)
    worker.join(timeout=120)
    stream.refresh_from_db()
    assert stream.state == JobState.CANCELLED and stream.result == {} and stream.progress_done < 6
