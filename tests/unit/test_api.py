import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import (
    Candidate,
    DatasetVersion,
    ImportJob,
    Item,
    Judgment,
    Membership,
    Project,
)
from jobs.models import JobState
from prefstudio.models import ApiToken
from prefstudio.services import api_token_create
from tests.factories import pair_task
from tests.unit.test_versions import fast_user, imported

TRL = "".join(
    json.dumps({"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}) + "\n" for i in range(5)
)


class Api:
    """A test client that sends ``Authorization: Bearer <token>``."""

    def __init__(self, token: str | None):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path, **params):
        return self.client.get(f"/api{path}", params, headers=self.headers)

    def post(self, path, payload=None, **kwargs):
        if "files" in kwargs:
            return self.client.post(f"/api{path}", kwargs["files"], headers=self.headers)
        body = payload if isinstance(payload, str | bytes) else json.dumps(payload or {})
        return self.client.post(f"/api{path}", body, content_type="application/json", headers=self.headers)


@pytest.fixture
def manager_api(manager, project):
    return Api(api_token_create(user=manager))


@pytest.fixture
def annotator_api(annotator, project):
    Membership.objects.create(project=project, user=annotator, role="annotator")
    return Api(api_token_create(user=annotator))


@pytest.fixture
def outsider_api(db):
    return Api(api_token_create(user=fast_user("outsider")))


def upload(api, project, name="data.jsonl", content=TRL):
    return api.post(
        f"/projects/{project.pk}/imports", files={"file": io.BytesIO(content.encode())} | {"name": name}
    )


def file_payload(name, content):
    handle = io.BytesIO(content.encode() if isinstance(content, str) else content)
    handle.name = name
    return {"file": handle}


def test_unauthenticated_api_calls_get_401_json_never_a_redirect(db, client):
    for method, path in [("get", "/api/projects"), ("post", "/api/projects"), ("get", "/api/openapi.json")]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "Unauthorized"}


def test_a_wrong_token_is_401_and_a_good_one_records_its_use(manager, project):
    assert Api("ps_not-a-real-token").get("/projects").status_code == 401
    api = Api(api_token_create(user=manager))
    assert ApiToken.objects.get(user=manager).last_used_at is None
    assert api.get("/projects").status_code == 200
    assert ApiToken.objects.get(user=manager).last_used_at is not None


def test_openapi_schema_for_token_holders_and_docs_page_for_logged_in_users(manager_api, manager, client):
    schema = manager_api.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/projects/{project_id}/tasks/next" in paths and "/api/versions/{version_id}/export" in paths
    assert client.get("/api/docs").status_code == 302
    client.force_login(manager)
    assert client.get("/api/docs").status_code == 200


def test_projects_list_shows_only_my_projects_with_my_role(manager_api, annotator_api, project):
    Project.objects.create(name="someone else's")
    assert [(p["name"], p["role"]) for p in manager_api.get("/projects").json()] == [
        (project.name, "manager")
    ]
    assert [p["role"] for p in annotator_api.get("/projects").json()] == ["annotator"]


def test_staff_create_projects_with_the_page_validation(manager_api, annotator_api, project):
    created = manager_api.post("/projects", {"name": "New one", "task_type": "ranking", "overlap": 3})
    assert created.status_code == 201
    assert created.json()["role"] == "manager" and created.json()["task_type"] == "ranking"
    duplicate = manager_api.post("/projects", {"name": "New one"})  # a conflict, not invalid input
    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": "Project with this Name already exists."}
    bad_type = manager_api.post("/projects", {"name": "x", "task_type": "video"})
    assert bad_type.status_code == 422 and "task_type" in bad_type.json()["detail"][0]["loc"]
    assert annotator_api.post("/projects", {"name": "mine"}).status_code == 403


def test_project_detail_is_404_for_outsiders(manager_api, outsider_api, project):
    pair_task(project)
    response = manager_api.get(f"/projects/{project.pk}")
    assert response.status_code == 200 and response.json()["counts"]["tasks"] == 1
    assert outsider_api.get(f"/projects/{project.pk}").status_code == 404


def test_import_upload_imports_synchronously_and_reports_counts(manager_api, manager, project, client):
    response = manager_api.post(f"/projects/{project.pk}/imports", files=file_payload("prefs.jsonl", TRL))
    assert response.status_code == 201, response.content
    assert response.json()["rows_total"] == 5
    assert Item.objects.filter(project=project).count() == 5
    job = ImportJob.objects.get(pk=response.json()["import_id"])  # kept like a web import, with its file
    assert (job.project, job.created_by, job.original_name) == (project, manager, "prefs.jsonl")
    assert job.state == JobState.SUCCEEDED and job.report["counts"] == response.json()["counts"]
    assert Path(job.file.path).read_text() == TRL
    client.force_login(manager)
    assert "prefs.jsonl" in client.get(reverse("project-detail", args=[project.pk])).content.decode()
    page = client.get(reverse("import-detail", args=[project.pk, job.pk])).content.decode()
    assert "Imported 5 items" in page


def test_import_upload_rejects_the_whole_file_with_row_errors(manager_api, project):
    bad = TRL + json.dumps({"prompt": "Q9?", "chosen": "x"}) + "\n"
    response = manager_api.post(f"/projects/{project.pk}/imports", files=file_payload("prefs.jsonl", bad))
    assert response.status_code == 422
    assert {"line": 6, "field": "rejected", "message": "is missing"} in response.json()["errors"]
    assert not Item.objects.filter(project=project).exists()
    job = ImportJob.objects.get(pk=response.json()["import_id"])
    assert job.state == JobState.FAILED and job.report["errors"][0]["line"] == 6
    wrong_kind = manager_api.post(f"/projects/{project.pk}/imports", files=file_payload("prefs.exe", "x"))
    assert wrong_kind.status_code == 422 and wrong_kind.json()["detail"][0]["loc"] == ["file"]


def test_annotators_cannot_import_and_outsiders_do_not_see_the_project(annotator_api, outsider_api, project):
    url = f"/projects/{project.pk}/imports"
    assert annotator_api.post(url, files=file_payload("a.jsonl", TRL)).status_code == 403
    assert outsider_api.post(url, files=file_payload("a.jsonl", TRL)).status_code == 404


def test_next_task_hides_provenance_and_judgment_submit_then_204(annotator_api, annotator, project):
    task = pair_task(project, prompt="Which?", texts=("first", "second"))
    Candidate.objects.filter(pk__in=task.candidate_ids).update(
        provenance={"kind": "model", "model": "secret-7b"}
    )
    response = annotator_api.get(f"/projects/{project.pk}/tasks/next")
    assert response.status_code == 200
    body = response.json()
    assert "secret-7b" not in response.content.decode() and "provenance" not in response.content.decode()
    assert body["task_id"] == task.pk and body["prompt"] == "Which?"
    assert [(c["label"], c["text"]) for c in body["candidates"]] == [("a", "first"), ("b", "second")]
    judged = annotator_api.post(
        f"/assignments/{body['assignment_id']}/judgment", {"choice": "b", "strength": 2}
    )
    assert judged.status_code == 201 and judged.json()["choice"] == "b"
    assert Judgment.objects.get(task=task).annotator == annotator
    assert annotator_api.get(f"/projects/{project.pk}/tasks/next").status_code == 204


def test_judgment_errors_are_field_level_and_others_assignments_are_404(annotator_api, manager_api, project):
    pair_task(project)
    assignment_id = annotator_api.get(f"/projects/{project.pk}/tasks/next").json()["assignment_id"]
    url = f"/assignments/{assignment_id}/judgment"
    missing_strength = annotator_api.post(url, {"choice": "a"})
    assert missing_strength.status_code == 422
    assert missing_strength.json()["detail"][0]["loc"] == ["body", "strength"]
    assert annotator_api.post(url, {"choice": "left"}).status_code == 422
    assert manager_api.post(url, {"choice": "a", "strength": 1}).status_code == 404


def test_freeze_fetch_and_export_a_version(manager_api, project):
    for i in range(3):
        imported(pair_task(project, prompt=f"p{i}"))
    created = manager_api.post(
        f"/projects/{project.pk}/versions", {"min_votes": 1, "seed": 2, "test_fraction": 0}
    )
    assert created.status_code == 201
    body = created.json()
    version = DatasetVersion.objects.get(pk=body["id"])
    assert (
        body["number"] == 1
        and body["content_hash"] == version.content_hash
        and body["stats"]["examples"] == 3
    )
    assert manager_api.get(f"/versions/{version.pk}").json()["rule"]["min_votes"] == 1
    jsonl = manager_api.get(f"/versions/{version.pk}/export", format="jsonl", split="all")
    rows = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert [r["prompt"] for r in rows] == ["p0", "p1", "p2"] and rows[0]["split"] == "train"
    parquet = manager_api.get(f"/versions/{version.pk}/export", format="parquet", split="train")
    assert pq.read_table(io.BytesIO(b"".join(parquet.streaming_content))).num_rows == 3


def test_version_endpoints_are_for_managers(annotator_api, outsider_api, manager_api, project):
    imported(pair_task(project))
    version_id = manager_api.post(f"/projects/{project.pk}/versions", {}).json()["id"]
    assert annotator_api.post(f"/projects/{project.pk}/versions", {}).status_code == 403
    assert annotator_api.get(f"/versions/{version_id}").status_code == 403
    assert annotator_api.get(f"/versions/{version_id}/export").status_code == 403
    assert outsider_api.get(f"/versions/{version_id}").status_code == 404
    assert outsider_api.post(f"/projects/{project.pk}/versions", {}).status_code == 404


def test_freezing_nothing_is_a_400_with_the_reason(manager_api, project):
    pair_task(project)
    response = manager_api.post(f"/projects/{project.pk}/versions", {})
    assert response.status_code == 400
    assert "No task qualifies" in response.json()["detail"]


def test_session_auth_works_for_reads_and_needs_csrf_for_writes(manager, project):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(manager)
    assert browser.get("/api/projects").status_code == 200
    refused = browser.post("/api/projects", json.dumps({"name": "csrf"}), content_type="application/json")
    assert refused.status_code == 403
    browser.get("/accounts/token/")
    token = browser.cookies["csrftoken"].value
    accepted = browser.post(
        "/api/projects",
        json.dumps({"name": "csrf"}),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert accepted.status_code == 201


BAD_INPUTS = [
    ("post", "/projects", "not json"),
    ("post", "/projects", "[1, 2]"),
    ("post", "/projects", {"name": ""}),
    ("post", "/projects", {"name": "x" * 500}),
    ("post", "/projects", {"name": "ok", "overlap": "many"}),
    ("post", "/projects", {"name": "ok", "overlap": 10_000}),
    ("post", "/projects", {"name": None}),
    ("get", "/projects/abc", None),
    ("get", "/projects/999999", None),
    ("get", "/projects/99999999999999999999999", None),
    ("post", "/projects/{pid}/versions", {"min_votes": 0}),
    ("post", "/projects/{pid}/versions", {"min_votes": "two"}),
    ("post", "/projects/{pid}/versions", {"min_strength": 9}),
    ("post", "/projects/{pid}/versions", {"drop_ties": "maybe"}),
    ("post", "/projects/{pid}/versions", {"min_agreement": 2}),
    ("post", "/projects/{pid}/versions", {"test_fraction": 1.0}),
    ("post", "/projects/{pid}/versions", {"seed": 10**30}),
    ("post", "/projects/{pid}/versions", "{"),
    ("get", "/versions/999999", None),
    ("get", "/versions/{vid}/export?format=csv", None),
    ("get", "/versions/{vid}/export?split=dev", None),
    ("post", "/assignments/999999/judgment", {"choice": "a", "strength": 1}),
    ("post", "/assignments/abc/judgment", {"choice": "a"}),
    ("post", "/projects/{pid}/imports", None),
    ("post", "/projects/{pid}/imports", {"file": "not a file"}),
]


def test_bad_inputs_get_json_errors_never_a_500(manager_api, project):
    imported(pair_task(project))
    version = manager_api.post(f"/projects/{project.pk}/versions", {}).json()["id"]
    for method, path, payload in BAD_INPUTS:
        url = path.format(pid=project.pk, vid=version)
        if method == "get":
            response = manager_api.client.get(f"/api{url}", headers=manager_api.headers)
        else:
            response = manager_api.post(url, payload)
        assert 400 <= response.status_code < 500, (url, response.status_code)
        assert "detail" in response.json(), (url, response.content[:200])
    for name, data in [
        ("x.jsonl", b"\xff\xfe garbage"),
        ("x.parquet", b"not parquet"),
        ("x.zip", b"PK nope"),
    ]:
        response = manager_api.post(f"/projects/{project.pk}/imports", files=file_payload(name, data))
        assert response.status_code == 422, (name, response.content[:300])
        assert response.json()["detail"]
    assert not ImportJob.objects.exists()  # an unreadable file keeps nothing, as on the page
