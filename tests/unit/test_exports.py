import io
import json
import zipfile

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation.models import Candidate, Item, ItemImage, Task, TaskType
from annotation.services.exports import ExportError, export_bytes
from annotation.services.versions import FreezeRule, dataset_version_freeze
from tests.factories import CandidateFactory, ItemFactory, pair_task
from tests.unit.test_versions import imported, make_asset


def standard_version(project, n=4):
    for i in range(n):
        imported(pair_task(project, prompt=f"Prompt {i} — ünïcode", texts=(f"good {i}", f"bad {i}")))
    Item.objects.filter(prompt__startswith="Prompt 0").update(split="test")
    return dataset_version_freeze(project=project, rule=FreezeRule(), test_fraction=0.0)


def conversational_version(project):
    item = ItemFactory(project=project, prompt="hi", messages=[{"role": "user", "content": "hi"}])
    chosen = CandidateFactory(
        item=item, position=0, text="hello", messages=[{"role": "assistant", "content": "hello"}]
    )
    rejected = CandidateFactory(
        item=item, position=1, text="no", messages=[{"role": "assistant", "content": "no"}]
    )
    imported(Task.objects.create(project=project, item=item, candidate_ids=[chosen.pk, rejected.pk]))
    return dataset_version_freeze(project=project, rule=FreezeRule())


def parse_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_jsonl_export_writes_one_unescaped_object_per_line_with_split(project):
    version = standard_version(project)
    result, data = export_bytes(version=version, fmt="jsonl", split="all")
    assert "ünïcode" in data.decode()
    rows = parse_jsonl(data)
    assert result.rows == 4 and result.filename.endswith("-v1-all.jsonl")
    assert rows[0] == {
        "prompt": "Prompt 0 — ünïcode",
        "chosen": "good 0",
        "rejected": "bad 0",
        "split": "test",
    }
    assert [r["split"] for r in rows[1:]] == ["train"] * 3


def test_single_split_export_has_only_that_split_and_no_split_column(project):
    version = standard_version(project)
    _, data = export_bytes(version=version, fmt="jsonl", split="test")
    assert parse_jsonl(data) == [{"prompt": "Prompt 0 — ünïcode", "chosen": "good 0", "rejected": "bad 0"}]


def test_export_rejects_unknown_format_and_split(project):
    version = standard_version(project)
    with pytest.raises(ExportError, match="format must be one of"):
        export_bytes(version=version, fmt="csv")
    with pytest.raises(ExportError, match="split must be one of"):
        export_bytes(version=version, fmt="jsonl", split="dev")


def test_parquet_export_of_conversational_rows_uses_message_structs(project):
    version = conversational_version(project)
    _, data = export_bytes(version=version, fmt="parquet", split="all")
    table = pq.read_table(io.BytesIO(data))
    assert str(table.schema.field("prompt").type) == "list<element: struct<role: string, content: string>>"
    assert table.to_pylist() == [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "no"}],
            "split": "train",
        }
    ]


def test_a_version_mixing_judged_and_imported_rows_exports_strength_to_parquet_and_datasets(
    project, tmp_path
):
    from tests.unit.test_versions import fast_user, vote

    imported(pair_task(project, prompt="imported first", texts=("good", "bad")))
    vote(pair_task(project, prompt="judged", texts=("x", "y")), fast_user("strong"), "b", strength=3)
    version = dataset_version_freeze(project=project, rule=FreezeRule(), test_fraction=0.0)
    _, data = export_bytes(version=version, fmt="parquet", split="all")
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == ["prompt", "chosen", "rejected", "strength", "split"]
    assert {r["prompt"]: r["strength"] for r in table.to_pylist()} == {"imported first": None, "judged": 3.0}
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    _, jsonl = export_bytes(version=version, fmt="jsonl", split="all")
    (tmp_path / "rows.jsonl").write_bytes(jsonl)
    ds = datasets.load_dataset(
        "json", data_files=str(tmp_path / "rows.jsonl"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert sorted(ds["strength"], key=str) == [3.0, None]


def test_exports_load_with_datasets_standard_and_conversational(project, manager, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    from tests.factories import ProjectFactory

    other = ProjectFactory()
    versions = {"standard": standard_version(project), "conversational": conversational_version(other)}
    for name, version in versions.items():
        for fmt in ("jsonl", "parquet"):
            _, data = export_bytes(version=version, fmt=fmt, split="all")
            path = tmp_path / f"{name}.{fmt}"
            path.write_bytes(data)
            loader = "json" if fmt == "jsonl" else "parquet"
            ds = datasets.load_dataset(
                loader, data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
            )
            assert ds.column_names == ["prompt", "chosen", "rejected", "split"]
            first = ds[0]
            if name == "conversational":
                assert first["chosen"] == [{"role": "assistant", "content": "hello"}]
            else:
                assert first["prompt"] == "Prompt 0 — ünïcode"


def test_stepwise_parquet_has_optional_columns_for_every_row(project):
    project.task_type = TaskType.STEPWISE
    project.save()
    for i, answer in enumerate(["4", None]):
        task = pair_task(project, prompt=f"q{i}", texts=("right", "wrong"))
        metadata = {"initial_reason_steps": "Step 1."} | ({"answer": answer} if answer else {})
        Item.objects.filter(pk=task.item_id).update(metadata=metadata)
        imported(task)
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    _, data = export_bytes(version=version, fmt="parquet", split="train")
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert [r["answer"] for r in rows] == ["4", None]
    assert all(r["initial_reason_steps"] == "Step 1." for r in rows)


def image_pair_version(project):
    project.task_type = TaskType.IMAGE_PAIR
    project.save()
    red, blue = make_asset((255, 0, 0)), make_asset((0, 0, 255))
    item = ItemFactory(project=project, prompt="a red square")
    c = [Candidate.objects.create(item=item, position=i, asset=a) for i, a in enumerate((red, blue))]
    imported(Task.objects.create(project=project, item=item, candidate_ids=[x.pk for x in c]))
    return dataset_version_freeze(project=project, rule=FreezeRule()), red, blue


def test_image_pair_jsonl_export_is_a_zip_with_images_referenced_by_relative_path(project):
    version, red, blue = image_pair_version(project)
    result, data = export_bytes(version=version, fmt="jsonl", split="all")
    assert result.filename.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = parse_jsonl(archive.read("data.jsonl"))
        assert rows == [
            {
                "caption": "a red square",
                "jpg_0": f"images/{red.sha256}.png",
                "jpg_1": f"images/{blue.sha256}.png",
                "label_0": 1.0,
                "split": "train",
            }
        ]
        assert archive.read(rows[0]["jpg_0"]) == red.file.open("rb").read()
        assert sorted(archive.namelist()) == sorted(["data.jsonl", rows[0]["jpg_0"], rows[0]["jpg_1"]])


def test_image_pair_parquet_embeds_image_bytes(project):
    version, red, blue = image_pair_version(project)
    _, data = export_bytes(version=version, fmt="parquet", split="all")
    table = pq.read_table(io.BytesIO(data))
    assert str(table.schema.field("jpg_0").type) == "binary"
    row = table.to_pylist()[0]
    assert row["jpg_1"] == blue.file.open("rb").read()
    assert row["label_0"] == 1.0


def test_multi_image_parquet_embeds_images_as_hf_image_structs(project):
    project.task_type = TaskType.MULTI_IMAGE
    project.save()
    task = pair_task(project, prompt="which?")
    asset = make_asset((9, 9, 9))
    ItemImage.objects.create(item_id=task.item_id, asset=asset, position=0)
    imported(task)
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    _, data = export_bytes(version=version, fmt="parquet", split="all")
    row = pq.read_table(io.BytesIO(data)).to_pylist()[0]
    assert row["images"] == [{"bytes": asset.file.open("rb").read(), "path": f"{asset.sha256}.png"}]


def test_export_dataset_command_writes_the_file_and_prints_path_and_rows(project, tmp_path, capsys):
    version = standard_version(project)
    output = tmp_path / "out.parquet"
    call_command(
        "export_dataset", str(version.pk), "--format", "parquet", "--output", str(output), "--split", "train"
    )
    assert capsys.readouterr().out.strip() == f"{output} 3 rows"
    assert pq.read_table(output).num_rows == 3


def test_export_dataset_command_fails_clearly_for_a_missing_version(db, tmp_path):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No dataset version with id 999"):
        call_command("export_dataset", "999", "--format", "jsonl", "--output", str(tmp_path / "x.jsonl"))


def test_download_view_streams_jsonl_with_a_filename(manager_client, project):
    version = standard_version(project)
    url = reverse("version-export", args=[project.pk, version.pk, "jsonl"])
    response = manager_client.get(url + "?split=train")
    assert response.status_code == 200
    assert (
        'filename="' in response["Content-Disposition"]
        and "-v1-train.jsonl" in response["Content-Disposition"]
    )
    assert len(parse_jsonl(b"".join(response.streaming_content))) == 3


def test_download_view_serves_parquet_and_rejects_bad_split_and_format(manager_client, project):
    version = standard_version(project)
    url = reverse("version-export", args=[project.pk, version.pk, "parquet"])
    response = manager_client.get(url)
    assert response.status_code == 200
    assert pq.read_table(io.BytesIO(b"".join(response.streaming_content))).num_rows == 4
    assert manager_client.get(url + "?split=dev").status_code == 400
    assert (
        manager_client.get(reverse("version-export", args=[project.pk, version.pk, "csv"])).status_code == 404
    )


def test_annotators_cannot_download_exports(annotator_client, project):
    version = standard_version(project)
    url = reverse("version-export", args=[project.pk, version.pk, "jsonl"])
    assert annotator_client.get(url).status_code == 403


def test_ranking_and_factuality_parquet_keep_their_extra_columns(project):
    from annotation.models import Judgment, JudgmentSource

    project.task_type = TaskType.RANKING
    project.save()
    item = ItemFactory(project=project, prompt="rank")
    c = [CandidateFactory(item=item, position=i, text=f"r{i}") for i in range(3)]
    task = Task.objects.create(project=project, item=item, candidate_ids=[x.pk for x in c])
    Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, ranking=[c[0].pk, c[1].pk, c[2].pk])
    _, data = export_bytes(version=dataset_version_freeze(project=project, rule=FreezeRule()), fmt="parquet")
    assert [r["rank_gap"] for r in pq.read_table(io.BytesIO(data)).to_pylist()] == [1.0, 2.0, 1.0]

    from tests.factories import ProjectFactory

    facts = ProjectFactory(task_type=TaskType.FACTUALITY)
    item = ItemFactory(project=facts, prompt="facts")
    for position, labels in enumerate(([True], [False])):
        candidate = CandidateFactory(
            item=item, position=position, text=f"s{position}.", sentences=[f"s{position}."]
        )
        task = Task.objects.create(project=facts, item=item, candidate_ids=[candidate.pk])
        Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, sentence_labels=labels)
    _, data = export_bytes(version=dataset_version_freeze(project=facts, rule=FreezeRule()), fmt="parquet")
    row = pq.read_table(io.BytesIO(data)).to_pylist()[0]
    assert row["chosen_sentences"] == [{"text": "s0.", "start": 0, "end": 3, "label": "factual"}]
    assert row["rejected_sentences"] == [{"text": "s1.", "start": 0, "end": 3, "label": "hallucinated"}]
