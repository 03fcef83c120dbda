"""export → import into a new project → freeze → export gives the same rows (docs/data-mapping.md)."""

import io
import json
import zipfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from annotation.models import TaskType
from annotation.services.exports import export_bytes
from annotation.services.imports import preferences_import
from annotation.services.versions import FreezeRule, dataset_version_freeze
from tests.factories import ProjectFactory

STANDARD = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "split": "test"},
    {"prompt": "Capital of France?", "chosen": "Paris — of course.", "rejected": "Lyon", "id": "r2"},
] + [{"prompt": f"Question {i}?", "chosen": f"Yes {i}", "rejected": f"No {i}"} for i in range(10)]

CONVERSATIONAL = [
    {
        "prompt": [{"role": "user", "content": f"Hi {i}"}],
        "chosen": [{"role": "assistant", "content": f"Hello {i}!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    for i in range(6)
]

IMPLICIT = [{"chosen": f"The sky {i} is blue.", "rejected": f"The sky {i} is green."} for i in range(4)]

STEPWISE = [
    {"prompt": f"{i}+{i}?", "initial_reason_steps": "Step 1: add.", "chosen": f"= {2 * i}", "rejected": "= 7"}
    for i in range(4)
]


def import_file(project, path):
    outcome = preferences_import(project=project, path=path)
    assert outcome.ok, outcome.report()
    return outcome


def freeze_export(project, fmt):
    version = dataset_version_freeze(project=project, rule=FreezeRule(), seed=5, test_fraction=0.3)
    return version, export_bytes(version=version, fmt=fmt, split="all")[1]


def jsonl_rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.mark.parametrize(
    ("task_type", "records"),
    [
        (TaskType.PAIRWISE, STANDARD),
        (TaskType.PAIRWISE, IMPLICIT),
        (TaskType.PAIRWISE, CONVERSATIONAL),
        (TaskType.STEPWISE, STEPWISE),
    ],
    ids=["standard", "implicit", "conversational", "stepwise"],
)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_round_trip_gives_the_same_rows(db, tmp_path, task_type, records, fmt):
    source = tmp_path / "source.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    first_project = ProjectFactory(task_type=task_type)
    import_file(first_project, source)
    first_version, first = freeze_export(first_project, fmt)
    assert first_version.stats["examples"] == len(records)

    exported = tmp_path / f"export.{fmt}"
    exported.write_bytes(first)
    second_project = ProjectFactory(task_type=task_type)
    import_file(second_project, exported)
    second_version, second = freeze_export(second_project, fmt)

    if fmt == "jsonl":
        first_rows, second_rows = jsonl_rows(first), jsonl_rows(second)
    else:
        first_rows = pq.read_table(io.BytesIO(first)).to_pylist()
        second_rows = pq.read_table(io.BytesIO(second)).to_pylist()
    assert second_rows == first_rows
    assert second_version.content_hash == first_version.content_hash
    assert first_rows[0]["split"] == ("test" if records is STANDARD else first_rows[0]["split"])


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_pair_zip_round_trip_gives_the_same_rows_and_images(db, tmp_path):
    source = tmp_path / "pairs.zip"
    with zipfile.ZipFile(source, "w") as archive:
        lines = []
        for i, label in enumerate([1, 0, 1]):
            archive.writestr(f"img/{i}a.png", png((i * 40, 0, 0)))
            archive.writestr(f"img/{i}b.png", png((0, i * 40, 0)))
            lines.append(
                {"caption": f"cap {i}", "jpg_0": f"img/{i}a.png", "jpg_1": f"img/{i}b.png", "label_0": label}
            )
        archive.writestr("data.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    first_project = ProjectFactory(task_type=TaskType.IMAGE_PAIR)
    import_file(first_project, source)
    _, first = freeze_export(first_project, "jsonl")

    exported = tmp_path / "export.zip"
    exported.write_bytes(first)
    second_project = ProjectFactory(task_type=TaskType.IMAGE_PAIR)
    import_file(second_project, exported)
    _, second = freeze_export(second_project, "jsonl")

    with zipfile.ZipFile(io.BytesIO(first)) as a, zipfile.ZipFile(io.BytesIO(second)) as b:
        assert jsonl_rows(b.read("data.jsonl")) == jsonl_rows(a.read("data.jsonl"))
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert [r["label_0"] for r in jsonl_rows(a.read("data.jsonl"))] == [1.0, 0.0, 1.0]


def test_image_pair_parquet_round_trip_embeds_the_same_bytes(db, tmp_path):
    source = tmp_path / "pairs.parquet"
    import pyarrow as pa

    table = pa.table(
        {
            "caption": ["one", "two"],
            "jpg_0": [png((1, 1, 1)), png((2, 2, 2))],
            "jpg_1": [png((3, 3, 3)), png((4, 4, 4))],
            "label_0": [0.0, 1.0],
        }
    )
    pq.write_table(table, source)
    first_project = ProjectFactory(task_type=TaskType.IMAGE_PAIR)
    import_file(first_project, source)
    _, first = freeze_export(first_project, "parquet")
    exported = tmp_path / "export.parquet"
    exported.write_bytes(first)
    second_project = ProjectFactory(task_type=TaskType.IMAGE_PAIR)
    import_file(second_project, exported)
    _, second = freeze_export(second_project, "parquet")
    first_rows = pq.read_table(io.BytesIO(first)).to_pylist()
    assert pq.read_table(io.BytesIO(second)).to_pylist() == first_rows
    assert first_rows[0]["jpg_0"] == png((1, 1, 1))


def test_multi_image_zip_round_trip_keeps_images_in_order(db, tmp_path):
    source = tmp_path / "multi.zip"
    with zipfile.ZipFile(source, "w") as archive:
        lines = []
        for i in range(3):
            names = [f"pics/{i}-{k}.png" for k in range(2)]
            for k, name in enumerate(names):
                archive.writestr(name, png((i * 50, k * 90, 7)))
            lines.append(
                {"images": names, "prompt": f"Compare {i}", "chosen": f"left {i}", "rejected": "same"}
            )
        archive.writestr("data.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    first_project = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    import_file(first_project, source)
    _, first = freeze_export(first_project, "jsonl")
    exported = tmp_path / "export.zip"
    exported.write_bytes(first)
    second_project = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    import_file(second_project, exported)
    _, second = freeze_export(second_project, "jsonl")
    with zipfile.ZipFile(io.BytesIO(first)) as a, zipfile.ZipFile(io.BytesIO(second)) as b:
        first_rows = jsonl_rows(a.read("data.jsonl"))
        assert jsonl_rows(b.read("data.jsonl")) == first_rows
        assert a.read(first_rows[0]["images"][1]) == png((0, 90, 7))
