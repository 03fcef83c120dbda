"""MIA-DPO augmentations (Pillow, seeded) and building multi-image items from single-image ones."""

import pytest
from django.core.exceptions import ValidationError
from PIL import Image

from annotation.builders.multi_image import GRID_LAYOUT, PIP_SCALE, TILE, augment, png_bytes
from annotation.models import ItemImage, Judgment, JudgmentSource, Task, TaskType
from annotation.services.assets import asset_create_from_bytes
from annotation.services.multi_image_build import multi_image_items_build
from tests.factories import CandidateFactory, ItemFactory, ProjectFactory

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (90, 90, 90)]


def solid(colour, size=(64, 48)):
    return Image.new("RGB", size, colour)


def test_sequence_puts_the_target_among_two_to_five_images_and_names_it():
    target, others = solid(COLOURS[0]), [solid(c) for c in COLOURS[1:]]
    for seed in range(20):
        built = augment("sequence", target, others, "What colour is it?", seed=seed)
        assert 2 <= len(built.images) <= 5
        assert built.images[built.target] is target and built.sources[built.target] == 0
        assert f"Image{built.target + 1} only" in built.question and built.question.endswith(
            "What colour is it?"
        )


@pytest.mark.parametrize("n", sorted(GRID_LAYOUT))
def test_grid_is_one_collage_of_448px_tiles_with_the_target_in_its_tile(n):
    target, others = solid(COLOURS[0], (100, 100)), [solid(c, (100, 100)) for c in COLOURS[1:]] * 2
    built = augment("grid", target, others, "Q?", seed=1, size=n)
    (collage,) = built.images
    columns, rows = GRID_LAYOUT[n]
    assert collage.size == (columns * TILE, rows * TILE)
    col, row = built.target % columns, built.target // columns
    centre = collage.getpixel((col * TILE + TILE // 2, row * TILE + TILE // 2))
    assert centre == COLOURS[0]
    assert f'"Image {built.target + 1}"' in built.question
    # the label "Image i" sits on a white box in the tile's corner
    assert collage.getpixel((col * TILE + 4, row * TILE + 4)) == (255, 255, 255)


def test_pip_centres_the_target_at_70_percent_on_another_image():
    built = augment("pip", solid(COLOURS[0], (200, 200)), [solid(COLOURS[1], (200, 200))], "Q?", seed=0)
    (picture,) = built.images
    assert picture.size == (TILE, TILE)
    inset = round(TILE * PIP_SCALE)
    margin = (TILE - inset) // 2
    assert picture.getpixel((TILE // 2, TILE // 2)) == COLOURS[0]
    assert picture.getpixel((margin + 2, margin + 2)) == COLOURS[0]
    assert picture.getpixel((margin - 3, TILE // 2)) == COLOURS[1]


def test_same_seed_gives_identical_bytes_and_too_few_images_is_an_error():
    target, others = solid(COLOURS[0]), [solid(c) for c in COLOURS[1:4]]
    first = augment("grid", target, others, "Q?", seed=7)
    again = augment("grid", target, others, "Q?", seed=7)
    assert png_bytes(first.images[0]) == png_bytes(again.images[0]) and first.question == again.question
    with pytest.raises(ValueError, match="at least"):
        augment("sequence", target, [], "Q?", seed=0)
    with pytest.raises(ValueError, match="kind"):
        augment("mosaic", target, others, "Q?", seed=0)


@pytest.fixture
def single_image_source(db):
    source = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    for i, colour in enumerate(COLOURS[:4]):
        item = ItemFactory(project=source, prompt=f"What colour is shown? ({i})")
        asset = asset_create_from_bytes(data=png_bytes(solid(colour)))
        ItemImage.objects.create(item=item, asset=asset, position=0)
        chosen = CandidateFactory(item=item, position=0, text=f"colour {i}")
        rejected = CandidateFactory(item=item, position=1, text="no idea")
        task = Task.objects.create(project=source, item=item, candidate_ids=[chosen.pk, rejected.pk])
        Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, choice="a")
    return source


def test_build_creates_items_with_images_candidates_and_the_imported_choice(single_image_source):
    target = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    items = multi_image_items_build(source=single_image_source, target=target, seed=3, limit=2)
    assert len(items) == 6  # 2 sources × 3 kinds
    kinds = [item.metadata["mia_dpo"]["kind"] for item in items]
    assert kinds == ["sequence", "grid", "pip"] * 2
    sequence, grid, pip = items[:3]
    assert 2 <= sequence.images.count() <= 4  # only 3 other images in the pool
    assert grid.images.count() == 1 and pip.images.count() == 1
    assert (grid.images.get().asset.width, pip.images.get().asset.width) != (None, None)
    assert pip.images.get().asset.width == TILE
    target_image = sequence.images.all()[sequence.metadata["mia_dpo"]["target"]]
    source_item = single_image_source.items.get(pk=sequence.metadata["mia_dpo"]["source_item"])
    assert target_image.asset_id == source_item.images.get().asset_id
    task = Task.objects.get(item=grid)
    assert [c.text for c in grid.candidates.order_by("position")] == ["colour 0", "no idea"]
    assert Judgment.objects.get(task=task).choice == "a"
    again = multi_image_items_build(source=single_image_source, target=target, seed=3, limit=2)
    assert again == []  # same seed: same content, no duplicates


def test_build_refuses_a_non_multi_image_target_or_a_tiny_source(single_image_source):
    with pytest.raises(ValidationError, match="multi-image project"):
        multi_image_items_build(
            source=single_image_source, target=ProjectFactory(task_type=TaskType.PAIRWISE)
        )
    empty = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    with pytest.raises(ValidationError, match="at least two items"):
        multi_image_items_build(source=empty, target=ProjectFactory(task_type=TaskType.MULTI_IMAGE))


def test_build_page_builds_into_this_project(single_image_source, manager, client):
    from django.urls import reverse

    from tests.factories import MembershipFactory

    target = ProjectFactory(task_type=TaskType.MULTI_IMAGE)
    for project in (single_image_source, target):
        MembershipFactory(project=project, user=manager, role="manager")
    client.force_login(manager)
    url = reverse("multi-image-build", args=[target.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"source": single_image_source.pk, "kinds": ["pip"], "seed": 1, "limit": 2})
    assert response.status_code == 302
    assert target.items.count() == 2
    bad = client.post(url, {"source": single_image_source.pk, "kinds": [], "seed": 1, "limit": 2})
    assert bad.status_code == 400
