"""Bad input: every problem is reported with its line, field and reason, and nothing is imported."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.importers import FileFormatError
from annotation.models import Asset, Candidate, Item, Judgment, Task
from annotation.services.imports import preferences_import
from tests.factories import ItemFactory, ProjectFactory

from .import_samples import jsonl_bytes, png_bytes, trl_rows, write_rows, write_zip

pytestmark = pytest.mark.django_db


def problems(project, path, **kwargs) -> list[tuple[int, str, str]]:
    outcome = preferences_import(project=project, path=path, **kwargs)
    assert not outcome.ok
    assert not Item.objects.filter(project=project).exists()
    return [(issue.line, issue.field, issue.reason) for issue in outcome.issues]


@pytest.fixture
def pairwise():
    return ProjectFactory(task_type="pairwise")


def test_import_rejects_whole_file_on_one_bad_line(tmp_path, pairwise):
    rows = [*trl_rows(1999), {"prompt": "last", "chosen": "yes", "rejected": ""}]
    path = write_rows(tmp_path / "p.jsonl", rows)
    assert problems(pairwise, path) == [(2000, "rejected", "is an empty string")]
    assert not (Candidate.objects.exists() or Task.objects.exists() or Judgment.objects.exists())


def test_import_reports_invalid_utf8_with_its_line(tmp_path, pairwise):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl_bytes(trl_rows(2)) + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    assert problems(pairwise, path) == [(3, "(line)", "invalid UTF-8 (byte 16 of the line)")]


def test_import_reports_invalid_utf8_in_csv(tmp_path, pairwise):
    path = tmp_path / "p.csv"
    path.write_bytes(b"prompt,chosen,rejected\nq1,a,b\nq\xff2,a,b\n")
    assert problems(pairwise, path) == [(3, "(line)", "invalid UTF-8")]


def test_import_reports_invalid_json_line(tmp_path, pairwise):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl_bytes(trl_rows(1)) + b'{"prompt": "x", \n')
    [(line, field, reason)] = problems(pairwise, path)
    assert (line, field) == (2, "(line)") and reason.startswith("not valid JSON")


def test_import_reports_wrong_types_and_missing_fields_of_every_row(tmp_path, pairwise):
    rows = [
        trl_rows(1)[0],
        {"prompt": "q", "chosen": 3, "rejected": "b"},
        {"prompt": "q2"},
        {"prompt": ["not", "messages"], "chosen": "a", "rejected": "b"},
        {"prompt": "q4", "chosen": "a", "rejected": "b", "split": "dev"},
    ]
    assert problems(pairwise, write_rows(tmp_path / "p.jsonl", rows)) == [
        (2, "chosen", "expected a string, got a number"),
        (3, "chosen", "is missing"),
        (3, "rejected", "is missing"),
        (4, "prompt[0]", "expected a message object {role, content}, got a string"),
        (5, "split", "must be 'train' or 'test', got 'dev'"),
    ]


def test_import_reports_bad_messages_in_conversational_rows(tmp_path, pairwise):
    good = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello"}],
    }
    rows = [
        {**good, "rejected": [{"role": "assistant", "content": "Go away"}]},
        {**good, "rejected": [{"role": "robot", "content": "Beep"}]},
        {**good, "rejected": [{"role": "assistant", "content": "  "}]},
        {**good, "rejected": "plain text"},
    ]
    assert problems(pairwise, write_rows(tmp_path / "p.jsonl", rows)) == [
        (2, "rejected[0].role", "must be one of assistant, developer, system, tool, user, got 'robot'"),
        (3, "rejected[0].content", "is an empty string"),
        (4, "rejected", "expected a list of messages ({role, content}), got a string"),
    ]


def test_import_reports_duplicate_rows_within_the_file(tmp_path, pairwise):
    rows = [*trl_rows(3), trl_rows(1, start=1)[0]]
    assert problems(pairwise, write_rows(tmp_path / "p.csv", rows)) == [(5, "(row)", "duplicate of line 3")]


def test_import_reports_duplicates_of_items_already_in_the_project(tmp_path, pairwise):
    path = write_rows(tmp_path / "p.jsonl", trl_rows(2))
    assert preferences_import(project=pairwise, path=path).ok
    first = Item.objects.get(project=pairwise, prompt="What is 0 + 0?")
    path2 = write_rows(tmp_path / "p2.jsonl", [*trl_rows(1, start=5), trl_rows(1)[0]])
    outcome = preferences_import(project=pairwise, path=path2)
    assert [(i.line, i.field, i.reason) for i in outcome.issues] == [
        (2, "(row)", f"duplicate of item #{first.pk} already in the project")
    ]
    assert Item.objects.filter(project=pairwise).count() == 2


def test_import_same_rows_into_another_project_are_not_duplicates(tmp_path, pairwise):
    path = write_rows(tmp_path / "p.jsonl", trl_rows(2))
    ItemFactory(project=pairwise)
    assert preferences_import(project=pairwise, path=path).ok
    assert preferences_import(project=ProjectFactory(task_type="pairwise"), path=path).ok


def test_import_reports_identical_chosen_and_rejected(tmp_path, pairwise):
    rows = [{"prompt": "q", "chosen": "same", "rejected": "same"}]
    assert problems(pairwise, write_rows(tmp_path / "p.jsonl", rows)) == [
        (1, "rejected", "is identical to chosen")
    ]


def test_import_json_array_errors_use_the_record_index(tmp_path, pairwise):
    rows = [*trl_rows(2), {"prompt": "q", "chosen": None, "rejected": "b"}, "not an object"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rows))
    assert problems(pairwise, path) == [
        (3, "chosen", "is missing"),
        (4, "(line)", "expected a JSON object, got a string"),
    ]


def test_import_refuses_rows_that_do_not_fit_the_project_task_type(tmp_path):
    ranking = ProjectFactory(name="Rank me", task_type="ranking")
    path = write_rows(tmp_path / "p.jsonl", trl_rows(2))
    with pytest.raises(FileFormatError) as caught:
        preferences_import(project=ranking, path=path)
    assert str(caught.value) == (
        "This file holds TRL preference rows, which need a project of type pairwise; "
        "project 'Rank me' has type ranking."
    )
    image_pair = ProjectFactory(name="Pics", task_type="image_pair")
    with pytest.raises(
        FileFormatError,
        match="need a project of type pairwise, ranking or stepwise; project 'Pics' has type image_pair",
    ):
        preferences_import(
            project=image_pair,
            path=write_rows(tmp_path / "r.jsonl", [{"prompt": "q", "responses": ["a", "b"]}]),
        )


def test_import_refuses_a_file_whose_columns_match_no_format(tmp_path, pairwise):
    path = write_rows(tmp_path / "p.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        FileFormatError, match=r"Cannot tell the format from the columns \(answer, question\)"
    ):
        preferences_import(project=pairwise, path=path)


def pick_zip(tmp_path, rows, files):
    return write_zip(tmp_path / "pick.zip", "pick.jsonl", jsonl_bytes(rows), files)


def test_import_reports_an_image_pillow_cannot_verify(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    broken = png_bytes()[:40]
    path = pick_zip(
        tmp_path,
        [{"caption": "c", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 1}],
        {"a.png": png_bytes(), "b.png": broken},
    )
    [(line, field, reason)] = problems(project, path)
    assert (line, field) == (1, "jpg_1")
    assert reason.startswith("is not an image Pillow can verify")
    assert not Asset.objects.exists()


def test_import_reports_images_over_the_byte_and_pixel_limits(tmp_path, settings):
    project = ProjectFactory(task_type="image_pair")
    settings.IMPORT_MAX_IMAGE_PIXELS = 100 * 100
    big = png_bytes(size=(200, 100))
    rows = [
        {"caption": "ok", "jpg_0": png_bytes((1, 1, 1)), "jpg_1": png_bytes((2, 2, 2)), "label_0": 1},
        {"caption": "too many pixels", "jpg_0": big, "jpg_1": png_bytes((3, 3, 3)), "label_0": 1},
    ]
    path = tmp_path / "pick.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert problems(project, path) == [
        (2, "jpg_0", "image is 200×100 = 20000 pixels, over the limit of 10000 pixels"),
    ]
    settings.IMPORT_MAX_IMAGE_PIXELS = 10**8
    settings.IMPORT_MAX_IMAGE_BYTES = 60
    [(line, field, reason), *_] = problems(project, path)
    assert (line, field) == (1, "jpg_0")
    assert reason == f"image is {len(png_bytes((1, 1, 1)))} bytes, over the limit of 60 bytes"


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("../secret.png", "path '../secret.png' points outside the upload ('..' is not allowed)"),
        ("images/../../x.png", "path 'images/../../x.png' points outside the upload ('..' is not allowed)"),
        ("/etc/passwd", "absolute path '/etc/passwd' is not allowed: give a path relative to the data file"),
        (
            "C:\\img.png",
            "absolute path 'C:\\\\img.png' is not allowed: give a path relative to the data file",
        ),
        ("missing.png", "image 'missing.png' is not in the zip (looked for 'missing.png')"),
    ],
)
def test_import_rejects_path_traversal_and_missing_images_in_a_zip(tmp_path, reference, reason):
    project = ProjectFactory(task_type="image_pair")
    rows = [{"caption": "c", "jpg_0": reference, "jpg_1": "b.png", "label_0": 1}]
    path = pick_zip(tmp_path, rows, {"b.png": png_bytes()})
    assert problems(project, path) == [(1, "jpg_0", reason)]


def test_import_command_line_images_cannot_leave_the_data_folder(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (tmp_path / "outside.png").write_bytes(png_bytes())
    (data_dir / "b.png").write_bytes(png_bytes((9, 9, 9)))
    path = write_rows(
        data_dir / "p.jsonl", [{"caption": "c", "jpg_0": "../outside.png", "jpg_1": "b.png", "label_0": 1}]
    )
    assert problems(project, path, images_from_dir=True) == [
        (1, "jpg_0", "path '../outside.png' points outside the upload ('..' is not allowed)")
    ]


def test_import_reports_a_bad_pickapic_label(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    rows = [{"caption": "c", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 0.3}]
    path = pick_zip(tmp_path, rows, {"a.png": png_bytes(), "b.png": png_bytes((0, 0, 0))})
    assert problems(project, path) == [
        (1, "label_0", "must be 1 (image 0 preferred), 0 (image 1 preferred) or 0.5 (tie), got 0.3")
    ]


def test_import_refuses_a_zip_with_no_or_several_data_files(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    empty = write_zip(tmp_path / "e.zip", "a.png", png_bytes(), {})
    with pytest.raises(FileFormatError, match="holds no data file"):
        preferences_import(project=project, path=empty)
    two = write_zip(tmp_path / "t.zip", "a.jsonl", b"{}", {"b.csv": b"x"})
    with pytest.raises(FileFormatError, match="holds 2 data files"):
        preferences_import(project=project, path=two)


def test_import_stops_collecting_after_1000_problems(tmp_path, pairwise):
    rows = [{"prompt": f"q{i}", "chosen": "", "rejected": "b"} for i in range(1500)]
    outcome = preferences_import(project=pairwise, path=write_rows(tmp_path / "p.jsonl", rows))
    assert len(outcome.issues) == 1000 and outcome.truncated
    assert outcome.issues[-1].line == 1000
    assert outcome.report()["truncated"] is True


def test_import_reports_stepwise_and_factuality_field_errors(tmp_path):
    stepwise = ProjectFactory(task_type="stepwise")
    rows = [{"prompt": "p", "initial_reason_steps": 5, "chosen": "a", "rejected": "b"}]
    assert problems(stepwise, write_rows(tmp_path / "s.jsonl", rows)) == [
        (1, "initial_reason_steps", "expected a string (it may be empty), got a number")
    ]
    factuality = ProjectFactory(task_type="factuality")
    rows = [
        {
            "prompt": "p",
            "responses": [{"text": "A. B.", "sentences": [{"text": "A.", "label": True}, {"text": "B."}]}],
        }
    ]
    assert problems(factuality, write_rows(tmp_path / "f.jsonl", rows)) == [
        (1, "responses[0].sentences[1].label", "is missing while other sentences have labels")
    ]
