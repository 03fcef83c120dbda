"""Each supported layout is detected and stored as docs/data-mapping.md says."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.models import Asset, Candidate, Item, Judgment, Task
from annotation.services.imports import preferences_import
from tests.factories import ProjectFactory

from .import_samples import jsonl_bytes, png_bytes, trl_rows, write_rows, write_zip

pytestmark = pytest.mark.django_db


def run_import(project, path, **kwargs):
    outcome = preferences_import(project=project, path=path, **kwargs)
    assert outcome.ok, outcome.issues
    return outcome


def candidates_of(item):
    return list(Candidate.objects.filter(item=item).order_by("position"))


@pytest.mark.parametrize(
    ("suffix", "label"), [(".jsonl", "JSONL"), (".json", "JSON"), (".csv", "CSV"), (".parquet", "Parquet")]
)
def test_import_trl_standard_explicit_from_every_file_type(tmp_path, suffix, label):
    project = ProjectFactory(task_type="pairwise")
    path = write_rows(tmp_path / f"prefs{suffix}", trl_rows(3))
    outcome = run_import(project, path)
    assert outcome.description == f"TRL preference, standard, explicit prompt ({label})"
    assert outcome.counts == {"items": 3, "candidates": 6, "tasks": 3, "judgments": 3, "images": 0}
    item = Item.objects.get(project=project, prompt="What is 1 + 1?")
    chosen, rejected = candidates_of(item)
    assert (chosen.position, chosen.text, rejected.text) == (0, "It is 2.", "It is 3.")
    assert chosen.provenance == {"kind": "imported"}
    task = Task.objects.get(item=item)
    assert task.candidate_ids == [chosen.pk, rejected.pk]
    judgment = Judgment.objects.get(task=task)
    assert (judgment.source, judgment.choice, judgment.annotator) == ("imported", "a", None)
    assert len(item.content_hash) == 64


def test_import_trl_standard_implicit_prompt_uses_longest_common_prefix(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    rows = [{"chosen": "The sky is blue.", "rejected": "The sky is green."}]
    outcome = run_import(project, write_rows(tmp_path / "p.jsonl", rows))
    assert outcome.description == "TRL preference, standard, implicit prompt (JSONL)"
    item = Item.objects.get(project=project)
    assert item.prompt == "The sky is"
    assert [c.text for c in candidates_of(item)] == [" blue.", " green."]


CONV_PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def test_import_trl_conversational_explicit_prompt_keeps_messages(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    rows = [
        {
            "prompt": CONV_PROMPT,
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "p.jsonl", rows))
    assert outcome.description == "TRL preference, conversational, explicit prompt (JSONL)"
    item = Item.objects.get(project=project)
    assert item.messages == CONV_PROMPT
    assert item.prompt == "Capital of France?"
    chosen, rejected = candidates_of(item)
    assert chosen.messages == [{"role": "assistant", "content": "Paris."}]
    assert (chosen.text, rejected.text) == ("Paris.", "Lyon.")
    assert Judgment.objects.get(task__item=item).choice == "a"


def test_import_trl_conversational_implicit_prompt_splits_shared_turns(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    rows = [
        {
            "chosen": [*CONV_PROMPT, {"role": "assistant", "content": "Paris."}],
            "rejected": [*CONV_PROMPT, {"role": "assistant", "content": "Lyon."}],
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "p.parquet", rows))
    assert outcome.description == "TRL preference, conversational, implicit prompt (Parquet)"
    item = Item.objects.get(project=project)
    assert item.messages == CONV_PROMPT
    assert [c.messages for c in candidates_of(item)] == [
        [{"role": "assistant", "content": "Paris."}],
        [{"role": "assistant", "content": "Lyon."}],
    ]


def test_import_conversational_rows_from_csv_cells_holding_json(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    rows = [
        {
            "prompt": CONV_PROMPT,
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "p.csv", rows))
    assert outcome.description == "TRL preference, conversational, explicit prompt (CSV)"
    assert Item.objects.get(project=project).messages == CONV_PROMPT


def test_import_responses_list_into_pairwise_makes_every_pair_without_judgments(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    rows = [{"prompt": "Name a colour.", "responses": ["Red", "Blue", "Green"]}]
    outcome = run_import(project, write_rows(tmp_path / "r.jsonl", rows))
    assert outcome.description == "Prompt with a responses list, standard (JSONL)"
    ids = [c.pk for c in candidates_of(Item.objects.get(project=project))]
    assert sorted(t.candidate_ids for t in Task.objects.filter(project=project)) == [
        [ids[0], ids[1]],
        [ids[0], ids[2]],
        [ids[1], ids[2]],
    ]
    assert not Judgment.objects.exists()


def test_import_responses_list_into_ranking_makes_one_task_with_all_candidates(tmp_path):
    project = ProjectFactory(task_type="ranking")
    rows = [{"prompt": "Name a colour.", "responses": ["Red", "Blue", "Green", "Teal"]}]
    run_import(project, write_rows(tmp_path / "r.json", rows))
    item = Item.objects.get(project=project)
    task = Task.objects.get(project=project)
    assert task.candidate_ids == [c.pk for c in candidates_of(item)]
    assert [c.text for c in candidates_of(item)] == ["Red", "Blue", "Green", "Teal"]
    assert not Judgment.objects.exists()


def test_import_anthropic_hh_shared_turns_become_prompt_messages(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke."
    rows = [
        {
            "chosen": shared + "\n\nAssistant: Why did the chicken cross the road?",
            "rejected": shared + "\n\nAssistant: No.",
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "hh.jsonl", rows))
    assert outcome.description == "Anthropic HH transcripts (JSONL)"
    item = Item.objects.get(project=project)
    assert item.messages == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert item.prompt == "Tell me a joke."
    chosen, rejected = candidates_of(item)
    assert chosen.messages == [{"role": "assistant", "content": "Why did the chicken cross the road?"}]
    assert rejected.text == "No."
    assert Judgment.objects.get(task__item=item).choice == "a"


def test_import_stepwise_rows_keep_steps_and_answer(tmp_path):
    project = ProjectFactory(task_type="stepwise")
    rows = [
        {
            "prompt": "Compute 2*3+1.",
            "initial_reason_steps": "Step 1: 2*3 = 6.\n",
            "chosen": "Step 2: 6+1 = 7.",
            "rejected": "Step 2: 6+1 = 8.",
            "answer": "7",
            "dataset": "toy",
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "s.csv", rows))
    assert outcome.description == "Step-wise (prompt, initial_reason_steps, chosen, rejected) (CSV)"
    item = Item.objects.get(project=project)
    assert item.metadata == {"initial_reason_steps": "Step 1: 2*3 = 6.\n", "answer": "7", "dataset": "toy"}
    chosen, rejected = candidates_of(item)
    assert (chosen.text, chosen.steps, rejected.steps) == (
        "Step 2: 6+1 = 7.",
        ["Step 2: 6+1 = 7."],
        ["Step 2: 6+1 = 8."],
    )
    assert Judgment.objects.get(task__item=item).choice == "a"


def test_import_pickapic_parquet_with_image_bytes_and_hf_struct(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    red, blue, green = png_bytes((255, 0, 0)), png_bytes((0, 0, 255)), png_bytes((0, 255, 0), fmt="JPEG")

    def struct(data):  # the Hugging Face Image feature's storage
        return {"bytes": data, "path": None}

    rows = [
        {"caption": "a red square", "jpg_0": struct(red), "jpg_1": blue, "label_0": 1.0},
        {"caption": "a green square", "jpg_0": struct(green), "jpg_1": red, "label_0": 0.5},
        {"caption": "a blue square", "jpg_0": struct(red), "jpg_1": blue, "label_0": 0.0},
    ]
    path = tmp_path / "pick.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    outcome = run_import(project, path)
    assert outcome.description == "Pick-a-Pic image pairs (Parquet)"
    assert outcome.counts["images"] == 3 and Asset.objects.count() == 3
    judgments = {
        j.task.item.prompt: (j.choice, j.label_score) for j in Judgment.objects.select_related("task__item")
    }
    assert judgments == {
        "a red square": ("a", 1.0),
        "a green square": ("tie", 0.5),
        "a blue square": ("b", 0.0),
    }
    first = Item.objects.get(prompt="a red square")
    image0, image1 = candidates_of(first)
    assert image0.asset.sha256 != image1.asset.sha256
    assert (image0.asset.width, image0.asset.height, image0.asset.format) == (8, 6, "PNG")
    sha = image0.asset.sha256
    assert image0.asset.file.name == f"assets/{sha[:2]}/{sha[2:4]}/{sha}.png"
    assert image0.asset.file.read() == red
    jpeg = Candidate.objects.get(item__prompt="a green square", position=0).asset
    assert jpeg.format == "JPEG" and jpeg.file.name.endswith(".jpg")


def test_import_pickapic_zip_with_relative_image_paths(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    rows = [{"caption": "two cats", "jpg_0": "images/a.png", "jpg_1": "images/b.png", "label_0": 0}]
    path = write_zip(
        tmp_path / "pick.zip",
        "data/pick.jsonl",
        jsonl_bytes(rows),
        {"data/images/a.png": png_bytes((1, 2, 3)), "data/images/b.png": png_bytes((4, 5, 6))},
    )
    outcome = run_import(project, path)
    assert outcome.description == "Pick-a-Pic image pairs (JSONL in zip)"
    judgment = Judgment.objects.get()
    assert (judgment.choice, judgment.label_score) == ("b", 0.0)
    assert [c.asset.file.read() for c in candidates_of(judgment.task.item)] == [
        png_bytes((1, 2, 3)),
        png_bytes((4, 5, 6)),
    ]


def test_import_same_image_twice_is_stored_once(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    rows = [{"caption": f"pair {i}", "jpg_0": red, "jpg_1": blue, "label_0": 1} for i in range(3)]
    path = tmp_path / "pick.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    run_import(project, path)
    assert Asset.objects.count() == 2
    assert Candidate.objects.filter(item__project=project).count() == 6


def test_import_multi_image_rows_store_ordered_item_images(tmp_path):
    project = ProjectFactory(task_type="multi_image")
    rows = [
        {
            "images": ["one.png", "two.png"],
            "prompt": "Which image is brighter?",
            "chosen": "The second.",
            "rejected": "The first.",
        },
        {
            "images": ["two.png"],
            "messages": [{"role": "user", "content": "Describe it."}],
            "responses": ["Bright.", "Dark."],
        },
    ]
    files = {"one.png": png_bytes((10, 10, 10)), "two.png": png_bytes((250, 250, 250))}
    outcome = run_import(project, write_zip(tmp_path / "multi.zip", "rows.jsonl", jsonl_bytes(rows), files))
    assert outcome.description == "Multi-image prompts (JSONL in zip)"
    first = Item.objects.get(prompt="Which image is brighter?")
    assert [image.asset.file.read() for image in first.images.order_by("position")] == [
        files["one.png"],
        files["two.png"],
    ]
    assert Judgment.objects.get(task__item=first).choice == "a"
    second = Item.objects.get(prompt="Describe it.")
    assert second.messages == [{"role": "user", "content": "Describe it."}]
    assert second.images.count() == 1
    assert not Judgment.objects.filter(task__item=second).exists()


def test_import_factuality_rows_make_one_task_per_response_with_sentence_labels(tmp_path):
    project = ProjectFactory(task_type="factuality")
    rows = [
        {
            "prompt": "Tell me about Paris.",
            "responses": [
                "Paris is in France. It has 90 million people.",
                {
                    "text": "Paris is the capital. It is on the Loire.",
                    "sentences": [
                        {"text": "Paris is the capital.", "label": True},
                        {"text": "It is on the Loire.", "label": False},
                    ],
                },
            ],
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "f.jsonl", rows))
    assert outcome.description == "Factuality (responses and sentences) (JSONL)"
    item = Item.objects.get(project=project)
    plain, labelled = candidates_of(item)
    assert plain.sentences == ["Paris is in France.", "It has 90 million people."]
    assert labelled.sentences == ["Paris is the capital.", "It is on the Loire."]
    tasks = list(Task.objects.filter(item=item).order_by("id"))
    assert [t.candidate_ids for t in tasks] == [[plain.pk], [labelled.pk]]
    assert not Judgment.objects.filter(task=tasks[0]).exists()
    assert Judgment.objects.get(task=tasks[1]).sentence_labels == [True, False]


def test_import_keeps_split_and_scalar_columns_as_metadata(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    rows = [{**trl_rows(1)[0], "split": "test", "id": "row-7", "score": 0.25, "tags": ["x"]}]
    run_import(project, write_rows(tmp_path / "p.jsonl", rows))
    item = Item.objects.get(project=project)
    assert item.split == "test"
    assert item.metadata == {"id": "row-7", "score": 0.25}


def test_import_images_next_to_a_plain_file_are_read_only_from_the_command_line(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    (tmp_path / "a.png").write_bytes(png_bytes((1, 1, 1)))
    (tmp_path / "b.png").write_bytes(png_bytes((2, 2, 2)))
    path = write_rows(
        tmp_path / "pick.jsonl", [{"caption": "c", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 1}]
    )
    refused = preferences_import(project=project, path=path)
    assert [(i.field, "need a .zip upload" in i.reason) for i in refused.issues] == [("jpg_0", True)]
    run_import(project, path, images_from_dir=True)
    assert Judgment.objects.get().choice == "a"


def test_import_progress_callback_reaches_the_total(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    calls = []
    run_import(
        project, write_rows(tmp_path / "p.jsonl", trl_rows(1200)), progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (1200, 1200)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) >= 3
    assert Item.objects.filter(project=project).count() == 1200


def test_import_of_2000_rows_creates_every_record(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    outcome = run_import(project, write_rows(tmp_path / "p.jsonl", trl_rows(2000)))
    assert outcome.counts == {
        "items": 2000,
        "candidates": 4000,
        "tasks": 2000,
        "judgments": 2000,
        "images": 0,
    }
    task = Task.objects.filter(project=project).order_by("-id").first()
    assert task.candidate_ids == [c.pk for c in candidates_of(task.item)]
    assert task.item.prompt == "What is 1999 + 1999?"


def test_import_parquet_text_rows_read_in_batches(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(trl_rows(2500)), buffer, row_group_size=700)
    path = tmp_path / "big.parquet"
    path.write_bytes(buffer.getvalue())
    assert run_import(project, path).counts["items"] == 2500
    assert json.loads(json.dumps(Item.objects.get(prompt="What is 2499 + 2499?").metadata)) == {}


def test_import_multi_image_parquet_with_a_list_of_image_structs(tmp_path):
    project = ProjectFactory(task_type="multi_image")
    images = [{"bytes": png_bytes((5, 5, 5)), "path": None}, {"bytes": png_bytes((6, 6, 6)), "path": None}]
    rows = [{"images": images, "prompt": "Same picture?", "chosen": "No.", "rejected": "Yes."}]
    path = tmp_path / "multi.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert run_import(project, path).description == "Multi-image prompts (Parquet)"
    item = Item.objects.get(project=project)
    assert [i.asset.file.read() for i in item.images.order_by("position")] == [
        png_bytes((5, 5, 5)),
        png_bytes((6, 6, 6)),
    ]


def test_import_csv_line_numbers_count_multi_line_cells(tmp_path):
    project = ProjectFactory(task_type="pairwise")
    path = tmp_path / "p.csv"
    path.write_text('prompt,chosen,rejected\n"line one\nline two",a,b\nq2,,b\n', encoding="utf-8")
    outcome = preferences_import(project=project, path=path)
    assert [(i.line, i.field, i.reason) for i in outcome.issues] == [(4, "chosen", "is an empty string")]


def test_asset_create_from_bytes_verifies_and_deduplicates(settings):
    from annotation.services.assets import asset_create_from_bytes

    first = asset_create_from_bytes(data=png_bytes((7, 7, 7)))
    again = asset_create_from_bytes(data=png_bytes((7, 7, 7)))
    assert first.pk == again.pk and (first.width, first.height) == (8, 6)
    assert (settings.MEDIA_ROOT / first.file.name).read_bytes() == png_bytes((7, 7, 7))
    with pytest.raises(ValueError, match="is not an image Pillow can verify"):
        asset_create_from_bytes(data=b"not an image")


def test_import_pickapic_rows_without_a_label_become_pairs_to_judge(tmp_path):
    project = ProjectFactory(task_type="image_pair")
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    rows = [
        {"caption": "to judge", "jpg_0": red, "jpg_1": blue, "label_0": None},
        {"caption": "labelled", "jpg_0": blue, "jpg_1": red, "label_0": 1.0},
    ]
    path = tmp_path / "pick.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    outcome = run_import(project, path)
    assert outcome.counts["tasks"] == 2 and outcome.counts["judgments"] == 1
    unjudged = Task.objects.get(item__prompt="to judge")
    assert not unjudged.judgments.exists() and len(unjudged.candidate_ids) == 2
    zip_rows = [{"caption": "bare", "jpg_0": "a.png", "jpg_1": "b.png"}]
    bare = write_zip(
        tmp_path / "bare.zip", "pick.jsonl", jsonl_bytes(zip_rows), {"a.png": red, "b.png": blue}
    )
    assert run_import(project, bare).counts["judgments"] == 0


def test_import_problems_with_candidate_solutions_into_a_stepwise_project_for_step_labels(tmp_path):
    project = ProjectFactory(task_type="stepwise")
    rows = [
        {
            "prompt": "Tom has 3 apples and buys 4 more. How many?",
            "responses": ["Tom starts with 3.\n3 + 4 = 7.\nThe answer is 7.", "3 + 4 = 8.\nThe answer is 8."],
            "answer": "7",
        }
    ]
    outcome = run_import(project, write_rows(tmp_path / "solutions.jsonl", rows))
    assert outcome.counts == {"items": 1, "candidates": 2, "tasks": 2, "judgments": 0, "images": 0}
    item = Item.objects.get(project=project)
    first, second = candidates_of(item)
    assert first.steps == ["Tom starts with 3.", "3 + 4 = 7.", "The answer is 7."]
    assert second.steps == ["3 + 4 = 8.", "The answer is 8."]
    assert sorted(t.candidate_ids for t in Task.objects.filter(item=item)) == [[first.pk], [second.pk]]
    assert item.metadata["answer"] == "7"


def test_task_words_say_what_a_task_asks_and_what_the_file_holds():
    from annotation.importers.records import JudgmentIn, TaskIn, task_words

    assert (
        task_words(TaskIn((0, 1), JudgmentIn(choice="b")))
        == "response 1 vs response 2: the file prefers response 2"
    )
    assert (
        task_words(TaskIn((0, 1), JudgmentIn(choice="tie")))
        == "response 1 vs response 2: the file has it judged a tie"
    )
    assert task_words(TaskIn((0, 1, 2, 3))) == "rank responses 1–4: to judge"
    assert task_words(TaskIn((2,))) == "label response 3: to judge"
