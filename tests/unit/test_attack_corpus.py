"""The attack corpus: hostile input to every import format and every JSON endpoint gets a clear 4xx, never
a 5xx, and writes nothing (row counts unchanged, no orphan file under MEDIA_ROOT). Imports run through
the API, the web preview and the worker. The inputs are built in ``attack_corpus.py``."""

import io
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import (
    Asset,
    Assignment,
    Candidate,
    DatasetVersion,
    ImportJob,
    Item,
    ItemImage,
    Judgment,
    Membership,
    Project,
    Task,
    TaskType,
)
from annotation.services.assignments import assignment_take_next
from annotation.services.import_jobs import import_job_confirm
from prefstudio.services import api_token_create
from tests import screen_data as sd
from tests.factories import pair_task
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import TrainingJob

from . import attack_corpus as corpus

pytestmark = pytest.mark.django_db
WRITTEN = (Project, Item, Candidate, ItemImage, Task, Judgment, Asset, DatasetVersion, TrainingJob)


class Api:
    """Bearer-token client that returns a 500 as a response (the assertion names it) instead of raising."""

    def __init__(self, user):
        self.client = Client(raise_request_exception=False)
        self.headers = {"Authorization": f"Bearer {api_token_create(user=user)}"}

    def get(self, path, params=None):
        return self.client.get(f"/api{path}", params or {}, headers=self.headers)

    def post(self, path, body="", content_type="application/json"):
        return self.client.post(f"/api{path}", body, content_type=content_type, headers=self.headers)

    def upload(self, project, name: str, content: bytes):
        handle = io.BytesIO(content)
        handle.name = name
        return self.client.post(f"/api/projects/{project.pk}/imports", {"file": handle}, headers=self.headers)


def written() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in WRITTEN}


def orphan_files(settings) -> list[str]:
    """Files under MEDIA_ROOT that no import record or asset points to."""
    kept = {job.file.name for job in ImportJob.objects.all()} | {a.file.name for a in Asset.objects.all()}
    root = Path(settings.MEDIA_ROOT)
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    return sorted(files - kept)


@pytest.fixture
def api(manager):
    return Api(manager)


@pytest.fixture
def clean(settings):
    """Asserts, after the test, that nothing was written (but the test's own projects) and no file was
    left behind."""
    before = written()
    yield
    assert {**written(), "Project": 0} == {**before, "Project": 0}
    assert orphan_files(settings) == []


def project_of(task_type: str, manager) -> Project:
    project = Project.objects.create(name=f"attack {task_type}", task_type=task_type)
    Membership.objects.create(project=project, user=manager, role="manager")
    return project


def upload_rows(api, project, fmt: str, rows: list[dict]):
    """Rows as JSONL, zipped with the corpus images when the format names images."""
    data = corpus.jsonl_of(rows)
    if fmt in ("pickapic", "multi_image"):
        return api.upload(project, "data.zip", corpus.zip_of("data.jsonl", data))
    return api.upload(project, "data.jsonl", data)


def row_errors(response) -> list[tuple[int, str, str]]:
    assert response.status_code == 422, (response.status_code, response.content[:500])
    body = response.json()
    assert {"detail", "errors", "format", "truncated", "import_id"} <= set(body)
    return [(e["line"], e["field"], e["message"]) for e in body["errors"]]


def file_error(response) -> str:
    assert response.status_code == 422, (response.status_code, response.content[:500])
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["file"]
    return detail["msg"]


# --- imports: the corpus formats are valid --------------------------------------------------------


@pytest.mark.parametrize("fmt", corpus.FORMATS)
def test_corpus_rows_of_every_format_import(api, manager, fmt):
    task_type, row = corpus.FORMATS[fmt]
    project = project_of(task_type, manager)
    response = upload_rows(api, project, fmt, [row, corpus.second_variant(row)])
    assert response.status_code == 201, response.content[:500]
    assert Item.objects.filter(project=project).count() == 2


# --- imports: NUL and lone surrogates in any string -----------------------------------------------


@pytest.mark.parametrize("fmt", corpus.FORMATS)
@pytest.mark.parametrize(("bad", "named"), [(corpus.NUL, "NUL"), (corpus.SURROGATE, "surrogate")])
def test_unstorable_text_in_any_field_is_a_row_error_naming_line_and_field(
    api, manager, clean, fmt, bad, named
):
    task_type, row = corpus.FORMATS[fmt]
    project = project_of(task_type, manager)
    for path in corpus.string_paths(row):
        spoiled = corpus.replaced(row, path, _spoil(row, path, bad))
        errors = row_errors(upload_rows(api, project, fmt, [corpus.second_variant(row), spoiled]))
        assert any(
            line == 2 and field == corpus.path_name(path) and named in message
            for line, field, message in errors
        ), (path, errors)


def _spoil(row, path, bad):
    value = row
    for part in path:
        value = value[part]
    return value[:3] + bad + value[3:]


@pytest.mark.parametrize("bad", [corpus.NUL, corpus.SURROGATE])
def test_unstorable_text_in_keys_and_extra_columns_is_a_row_error(api, manager, clean, bad):
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    conv = corpus.FORMATS["trl-conv"][1]
    rows = [
        row,
        {**corpus.second_variant(row), f"col{bad}": 1},
        {**row, "prompt": "third", "note": f"a{bad}"},
        corpus.replaced(conv, ("chosen", 0, "content", 0), {"type": "text", "text": "hi", f"k{bad}": "v"}),
    ]
    errors = row_errors(api.upload(project, "data.jsonl", corpus.jsonl_of(rows)))
    assert [(line, field) for line, field, _ in errors] == [
        (2, repr(f"col{bad}")),
        (3, "note"),
        (4, f"chosen[0].content[0].{repr('k' + bad)}"),
    ]


# Arrow strings are valid UTF-8, so a Parquet file cannot hold a lone surrogate: that case does not exist.
UNSTORABLE_CASES = [
    (kind, bad)
    for kind in ("jsonl", "json", "csv", "parquet", "zip")
    for bad in (corpus.NUL, corpus.SURROGATE)
    if not (kind == "parquet" and bad == corpus.SURROGATE)
]


@pytest.mark.parametrize(("kind", "bad"), UNSTORABLE_CASES)
def test_unstorable_text_is_a_row_error_in_every_file_kind(api, manager, clean, tmp_path, kind, bad):
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    rows = [row, {**corpus.second_variant(row), "chosen": f"It is{bad} 4."}]
    content = {
        "jsonl": lambda: corpus.jsonl_of(rows),
        "json": lambda: json.dumps(rows).encode(),
        "csv": lambda: _csv(rows),
        "parquet": lambda: _parquet(rows, tmp_path),
        "zip": lambda: corpus.zip_of("d.jsonl", corpus.jsonl_of(rows), files={}),
    }[kind]()
    errors = row_errors(api.upload(project, f"data.{kind}", content))
    assert [line for line, _, _ in errors] == [3 if kind == "csv" else 2]  # a CSV's line 1 is its header
    assert errors[0][1] in ("chosen", "(line)"), errors  # CSV: the surrogate is invalid UTF-8 on disk


def _csv(rows) -> bytes:
    lines = ["prompt,chosen,rejected"] + [f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}"' for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")


def _parquet(rows, tmp_path) -> bytes:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path.read_bytes()


# --- imports: wrong types, deep nesting, odd numbers ----------------------------------------------


@pytest.mark.parametrize("fmt", corpus.FORMATS)
def test_wrong_types_in_any_field_are_4xx_and_write_nothing(api, manager, fmt):
    task_type, row = corpus.FORMATS[fmt]
    project = project_of(task_type, manager)
    paths = [path for path in corpus.string_paths(row)] + [(key,) for key in row]
    for wrong in corpus.WRONG_TYPES:
        before = written()
        rows = [corpus.replaced(row, path, wrong) for path in paths]
        response = upload_rows(api, project, fmt, [corpus.second_variant(row), *rows])
        assert response.status_code in (201, 422), (wrong, response.status_code, response.content[:300])
        if response.status_code == 422:
            assert written() == before


@pytest.mark.parametrize("fmt", ["trl", "responses", "factuality"])
def test_top_level_values_that_are_not_objects_are_row_errors(api, manager, clean, fmt):
    task_type, row = corpus.FORMATS[fmt]
    project = project_of(task_type, manager)
    lines = [json.dumps(row), "[1, 2]", '"text"', "5", "null", "{", "\ufeff{}"]
    errors = row_errors(api.upload(project, "data.jsonl", "\n".join(lines).encode()))
    assert [line for line, _, _ in errors] == [2, 3, 4, 5, 6, 7]


def test_json_nested_100000_deep_is_a_4xx_in_jsonl_json_and_csv(api, manager, clean):
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    jsonl = corpus.jsonl_of([row]) + corpus.deep_json().encode() + b"\n"
    assert row_errors(api.upload(project, "data.jsonl", jsonl)) == [
        (2, "(line)", "nested too deeply (lists or objects about a thousand levels deep)")
    ]
    assert "nested too deeply" in file_error(api.upload(project, "data.json", corpus.deep_json().encode()))
    records = json.dumps([row, {"prompt": "x", "chosen": corpus.deep_list(5), "rejected": "b"}])
    assert "nested too deeply" in file_error(
        api.upload(project, "data.json", ("[" * 50_000 + records).encode())
    )


def test_a_csv_cell_nested_100000_deep_is_a_text_cell(api, manager):
    project = project_of("pairwise", manager)
    csv = f'prompt,chosen,rejected\nq,"{corpus.deep_json()}",b\n'.encode()
    assert api.upload(project, "data.csv", csv).status_code == 201  # not JSON a list could come from: text


def test_nesting_below_the_parser_limit_is_still_a_row_error(api, manager, clean):
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    deep = {**corpus.second_variant(row), "extra": corpus.deep_list(200)}
    errors = row_errors(api.upload(project, "data.jsonl", corpus.jsonl_of([row, deep])))
    assert errors == [(2, "extra" + "[0]" * 32, "is nested more than 32 levels deep")]


def test_numbers_json_cannot_store_or_python_cannot_read_are_row_errors(api, manager, clean):
    project = project_of("pairwise", manager)
    conv = corpus.FORMATS["trl-conv"][1]
    part = ("chosen", 0, "content", 0)
    lines = [
        json.dumps(corpus.second_variant(conv)),
        json.dumps(corpus.replaced(conv, part, {"type": "text", "text": "hi", "w": math.nan})),
        '{"prompt": "p", "chosen": "a", "rejected": "b", "n": ' + "9" * 5000 + "}",
        json.dumps(corpus.replaced(conv, part, {"type": "text", "text": "hi", "w": math.inf})),
    ]
    errors = row_errors(api.upload(project, "data.jsonl", "\n".join(lines).encode()))
    assert [(line, field) for line, field, _ in errors] == [
        (2, "chosen[0].content[0].w"),
        (3, "(line)"),
        (4, "chosen[0].content[0].w"),
    ]


def test_a_nan_metadata_cell_is_dropped_not_refused(api, manager):
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    response = api.upload(project, "data.jsonl", json.dumps({**row, "score": math.nan}).encode())
    assert response.status_code == 201, response.content
    assert Item.objects.get(project=project).metadata == {}


# --- imports: per-field size limits ---------------------------------------------------------------


def test_a_prompt_over_the_default_limit_is_a_row_error_in_the_report(api, manager, clean):
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    huge = {**corpus.second_variant(row), "prompt": "x" * 200_001}
    assert row_errors(api.upload(project, "data.jsonl", corpus.jsonl_of([row, huge]))) == [
        (2, "prompt", "holds 200,001 characters, over the limit of 200,000")
    ]


def test_every_field_has_its_size_limit(api, manager, clean, settings):
    settings.IMPORT_MAX_PROMPT_CHARS = 100
    settings.IMPORT_MAX_RESPONSE_CHARS = 50
    settings.IMPORT_MAX_FIELD_CHARS = 20
    project = project_of("ranking", manager)
    _, row = corpus.FORMATS["responses"]
    rows = [
        row,
        {"prompt": "p" * 101, "responses": ["a", "b"]},
        {"prompt": "q", "responses": ["a", "b" * 51, "c"]},
        {"prompt": [{"role": "user", "content": "m" * 100}], "responses": ["a", "b"]},
        {"prompt": "r", "responses": ["a", "b"], "id": "i" * 21},
    ]
    assert row_errors(api.upload(project, "data.jsonl", corpus.jsonl_of(rows))) == [
        (2, "prompt", "holds 101 characters, over the limit of 100"),
        (3, "responses[1]", "holds 51 characters, over the limit of 50"),
        (4, "prompt", "holds 117 characters, over the limit of 100"),
        (5, "id", "holds 21 characters, over the limit of 20"),
    ]


# --- imports: damaged zips and images -------------------------------------------------------------


@pytest.mark.parametrize("case", list(corpus.bad_zips([corpus.FORMATS["pickapic"][1]])))
def test_a_damaged_or_hostile_zip_is_a_clear_import_error(api, manager, clean, settings, case):
    settings.UPLOAD_MAX_BYTES = 1_000_000
    project = project_of("image_pair", manager)
    _, row = corpus.FORMATS["pickapic"]
    content = corpus.bad_zips([row, corpus.second_variant(row)])[case]
    response = api.upload(project, "data.zip", content)
    assert response.status_code == 422, (response.status_code, response.content[:500])
    if case == "image member fails its CRC":
        assert [(line, field) for line, field, _ in row_errors(response)] == [(1, "jpg_0"), (2, "jpg_0")]
    else:
        assert file_error(response)


@pytest.mark.parametrize("case", list(corpus.bad_images()))
def test_a_bad_image_is_a_row_error_on_its_field(api, manager, clean, case):
    project = project_of("image_pair", manager)
    _, row = corpus.FORMATS["pickapic"]
    images = {**corpus.IMAGES, "bad.png": corpus.bad_images()[case]}
    content = corpus.zip_of("data.jsonl", corpus.jsonl_of([row, {**row, "jpg_1": "bad.png"}]), images)
    errors = row_errors(api.upload(project, "data.zip", content))
    assert [(line, field) for line, field, _ in errors] == [(2, "jpg_1")]


@pytest.mark.parametrize("path", corpus.BAD_IMAGE_PATHS)
def test_an_image_path_outside_the_zip_is_a_row_error(api, manager, clean, path):
    project = project_of("multi_image", manager)
    _, row = corpus.FORMATS["multi_image"]
    response = upload_rows(
        api, project, "multi_image", [row, {**corpus.second_variant(row), "images": [path]}]
    )
    assert [line for line, _, _ in row_errors(response)] == [2]


# --- imports: the web preview and the worker ------------------------------------------------------


def _web_upload(client, project, name: str, content: bytes):
    handle = io.BytesIO(content)
    handle.name = name
    return client.post(reverse("import-upload", args=[project.pk]), {"file": handle})


@pytest.mark.parametrize("bad", [corpus.NUL, corpus.SURROGATE])
def test_web_preview_reports_unstorable_text_as_a_row_error(manager, settings, bad):
    client = Client(raise_request_exception=False)
    client.force_login(manager)
    project = project_of("pairwise", manager)
    _, row = corpus.FORMATS["trl"]
    before = written()
    response = _web_upload(client, project, "d.jsonl", corpus.jsonl_of([row, {**row, "prompt": f"a{bad}"}]))
    assert response.status_code == 302, response.content[:500]
    job = ImportJob.objects.get(project=project)
    assert (
        job.report["preview_errors"][0]["line"] == 2 and job.report["preview_errors"][0]["field"] == "prompt"
    )
    assert written() == before and orphan_files(settings) == []


def test_web_preview_of_a_damaged_zip_keeps_no_record_and_no_file(manager, settings):
    client = Client(raise_request_exception=False)
    client.force_login(manager)
    project = project_of("image_pair", manager)
    content = corpus.bad_zips([corpus.FORMATS["pickapic"][1]])["data member fails its CRC"]
    response = _web_upload(client, project, "d.zip", content)
    assert response.status_code == 400 and b"Cannot read" in response.content
    assert not ImportJob.objects.exists() and orphan_files(settings) == []


@pytest.mark.parametrize("bad", [corpus.NUL, corpus.SURROGATE])
def test_worker_import_reports_unstorable_text_past_the_preview_and_writes_nothing(
    manager, settings, celery_eager, django_capture_on_commit_callbacks, bad
):
    client = Client(raise_request_exception=False)
    client.force_login(manager)
    project = project_of("pairwise", manager)
    rows = [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(8)]
    rows[6]["rejected"] = f"bad{bad}"
    before = written()
    assert _web_upload(client, project, "d.jsonl", corpus.jsonl_of(rows)).status_code == 302
    job = ImportJob.objects.get(project=project)
    assert job.report["preview_errors"] == []
    with django_capture_on_commit_callbacks(execute=True):
        assert import_job_confirm(job=job)
    job.refresh_from_db()
    assert job.state == "failed", (job.error, job.report)
    assert [(e["line"], e["field"]) for e in job.report["errors"]] == [(7, "rejected")]
    assert written() == before and orphan_files(settings) == []


# --- the JSON API ---------------------------------------------------------------------------------

HOSTILE_BODIES = [
    "[]",
    "[1]",
    '[{"name": "x"}]',
    '"text"',
    "5",
    "null",
    "true",
    "{",
    "\xff",
    corpus.deep_json(),
    corpus.deep_json(600),
    '{"a": ' + "9" * 5000 + "}",
    '{"a": NaN}',
]
HOSTILE_VALUES = [
    corpus.NUL,
    "a" + corpus.NUL,
    corpus.SURROGATE,
    "x" * 1_000_000,
    -1,
    0,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    *corpus.WRONG_TYPES,
    corpus.deep_list(600),
]


@pytest.fixture
def endpoints(manager, project, tmp_path, settings):
    """(path, a valid body) of every JSON route that takes a body."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    task = pair_task(project)
    assignment = assignment_take_next(project=project, annotator=manager)
    version = dataset_version(project)
    model = tiny_model_entry(tmp_path / "tiny")
    job_body = {"dataset_version_id": version.pk, "base_model_id": model.pk, "config": tiny_params(tmp_path)}
    assert task.pk and assignment is not None
    return [
        ("/projects", {"name": "P", "task_type": "pairwise", "overlap": 1, "guidelines": ""}),
        (f"/projects/{project.pk}/versions", {"min_votes": 1, "seed": 0, "test_fraction": 0.1}),
        (f"/assignments/{assignment.pk}/judgment", {"choice": "a", "strength": 2, "rationale": "ok"}),
        ("/jobs", job_body),
    ]


def _dumps(body) -> str:
    return json.dumps(body, allow_nan=True)


def _assert_refused(response, before, what):
    assert 400 <= response.status_code < 500, (what, response.status_code, response.content[:300])
    assert written() == before, what


def _assert_no_5xx(response, before, what):
    """A hostile value may be a valid one (``batch_size: 5``): no 5xx, and nothing written when refused."""
    assert response.status_code < 500, (what, response.status_code, response.content[:300])
    if response.status_code >= 400:
        assert written() == before, what


def test_hostile_json_bodies_get_a_4xx_on_every_route(api, endpoints):
    for path, _ in endpoints:
        for body in HOSTILE_BODIES:
            before = written()
            _assert_refused(api.post(path, body), before, (path, body[:40]))


def test_hostile_values_in_every_body_field_are_never_a_5xx_nor_a_partial_write(api, endpoints):
    for path, body in endpoints:
        for field in body:
            for value in HOSTILE_VALUES:
                before = written()
                response = api.post(path, _dumps({**body, field: value}))
                _assert_no_5xx(response, before, (path, field, repr(value)[:40]))


def test_hostile_values_in_every_job_config_field_are_never_a_5xx(api, endpoints, tmp_path):
    path, body = endpoints[-1]
    fields = [
        *tiny_params(tmp_path),
        "epochs",
        "seed",
        "lr_scheduler",
        "strategy",
        "fsdp_sharding",
        "fsdp_wrap",
        "lora_target_modules",
        "extra_losses",
    ]
    for field in fields:
        for value in [*HOSTILE_VALUES, [corpus.NUL], [{"name": "sft", "params": {"k": corpus.SURROGATE}}]]:
            before = written()
            config = {**body["config"], field: value}
            response = api.post(path, _dumps({**body, "config": config}))
            _assert_no_5xx(response, before, (field, repr(value)[:40]))


def test_epochs_past_the_step_limit_is_a_field_error_not_a_column_overflow(api, endpoints):
    path, body = endpoints[-1]
    for epochs, message in [(10**10, "at most 1,000"), (1000, "over the limit of 10,000,000")]:
        config = {k: v for k, v in body["config"].items() if k != "max_steps"}
        config.update(epochs=epochs, batch_size=1)
        if epochs == 1000:
            config["gradient_accumulation_steps"] = 1
        response = api.post(path, _dumps({**body, "config": config}))
        if epochs == 1000:  # 24 rows × 1000 epochs = 24,000 steps: within the limit
            assert response.status_code in (201, 202), response.content
            continue
        assert response.status_code == 422, response.content
        [detail] = response.json()["detail"]
        assert detail["loc"] == ["body", "epochs"] and message in detail["msg"]
    assert TrainingJob.objects.count() == 1


@pytest.mark.parametrize("huge", [2**63, 10**30, -1, 0])
def test_path_and_query_ids_out_of_range_are_4xx(api, endpoints, project, huge):
    before = written()
    for path in [
        f"/projects/{huge}",
        f"/versions/{huge}",
        f"/versions/{huge}/export",
        f"/jobs/{huge}",
        f"/jobs/{huge}/metrics",
        f"/projects/{huge}/tasks/next",
    ]:
        response = api.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.content[:300])
    for path in [f"/assignments/{huge}/judgment", f"/jobs/{huge}/cancel", f"/projects/{huge}/versions"]:
        response = api.post(path, "{}")
        assert 400 <= response.status_code < 500, (path, response.status_code, response.content[:300])
    response = api.get("/jobs", {"project_id": huge})
    assert 400 <= response.status_code < 500, response.content[:300]
    assert written() == before


def test_hostile_query_parameters_are_4xx(api, endpoints, project):
    job_id = api.post(endpoints[-1][0], _dumps(endpoints[-1][1])).json()["id"]
    before = written()
    for params in [
        {"after": -1},
        {"after": 2**63},
        {"limit": 10**30},
        {"limit": 0},
        {"names": corpus.NUL},
        {"names": "x" * 100_000},
    ]:
        response = api.get(f"/jobs/{job_id}/metrics", params)
        assert response.status_code < 500, (params, response.status_code, response.content[:300])
    for params in [{"format": "xml"}, {"split": corpus.NUL}]:
        response = api.get(f"/versions/{DatasetVersion.objects.first().pk}/export", params)
        assert 400 <= response.status_code < 500, (params, response.status_code)
    assert written() == before


def test_a_list_body_is_refused_where_an_object_is_expected(api, manager):
    project = project_of("pairwise", manager)
    assert upload_rows(api, project, "trl", corpus.FORMATS["trl"][1:] * 1).status_code == 201
    for body in ("[]", "[1, 2]", "null", '"{}"'):
        response = api.post(f"/projects/{project.pk}/versions", body)  # every FreezeIn field has a default
        assert response.status_code == 422, (body, response.content)
        assert "must be a JSON object" in response.json()["detail"][0]["msg"]
    assert not DatasetVersion.objects.filter(project=project).exists()
    assert api.post(f"/projects/{project.pk}/versions", "{}").status_code == 201


def test_an_import_posted_as_json_is_a_4xx(api, project):
    before = written()
    for body in HOSTILE_BODIES[:6]:
        _assert_refused(api.post(f"/projects/{project.pk}/imports", body), before, body)


# --- the annotate screens' submits ----------------------------------------------------------------

SCREENS = {
    TaskType.PAIRWISE: (pair_task, {"choice": "left", "strength": "2"}),
    TaskType.RANKING: (sd.ranking_task, {"ranking": "[]"}),
    TaskType.STEPWISE: (sd.steps_task, {"step_labels": '["correct", "correct", "correct"]'}),
    TaskType.FACTUALITY: (sd.facts_task, {"sentence_labels": '[{"label": "factual"}]'}),
    TaskType.IMAGE_PAIR: (sd.image_pair_task, {"choice": "left"}),
}
HOSTILE_FORM_VALUES = [
    corpus.NUL,
    "a" + corpus.NUL + "b",
    corpus.deep_json(),
    corpus.deep_json(600),
    "[" + json.dumps({"label": "hallucinated", "correction": "x\x00"}) + "]",
    '[{"label": "hallucinated", "correction": ' + json.dumps(corpus.deep_list(600)) + "}]",
    '{"a": NaN}',
    "9" * 5000,
    "-1",
    "1e999",
    "nan",
    "x" * 200_000,
]


@pytest.mark.parametrize("task_type", list(SCREENS))
def test_hostile_annotate_submits_re_render_with_errors_and_store_nothing(annotator, project, task_type):
    build, valid = SCREENS[task_type]
    project.task_type = task_type
    project.save()
    build(project)
    Membership.objects.create(project=project, user=annotator, role="annotator")
    client = Client(raise_request_exception=False)
    client.force_login(annotator)
    assert client.get(reverse("annotate", args=[project.pk])).status_code == 200
    assignment = Assignment.objects.get(annotator=annotator)
    submit = reverse("annotate-submit", args=[project.pk, assignment.pk])
    skip = reverse("annotate-skip", args=[project.pk, assignment.pk])
    fields = [*valid, "rationale", "corrected_step", "ratings", "time_spent_ms", "shown_at"]
    for field in fields:
        for value in HOSTILE_FORM_VALUES:
            response = client.post(submit, {**valid, field: value}, HTTP_HX_REQUEST="true")
            assert response.status_code < 500, (field, value[:40], response.status_code)
    for value in HOSTILE_FORM_VALUES[:2]:
        response = client.post(skip, {"reason": value}, HTTP_HX_REQUEST="true")
        assert response.status_code < 500 and "cannot be stored" in response.content.decode()
    assignment.refresh_from_db()
    assert assignment.skip_reason == ""
    assert all("\x00" not in j.rationale for j in Judgment.objects.filter(annotator=annotator))
