"""Image-pair exports → ordered pairs and pixels, and the on-disk VAE-latent / caption-embedding cache."""

import hashlib
import io
import json
import zipfile

import pytest
import torch
from PIL import Image

from training.engine.diffusion.data import (
    ImageDataError,
    decode_image,
    load_images,
    open_image_export,
    pick_a_pic_order,
    read_pairs,
)
from training.engine.diffusion.encode_cache import cached_encodings
from training.engine.diffusion.models import load_diffusion
from training.engine.diffusion.tiny import save_tiny_pixel, save_tiny_sd
from training.engine.runtime.recipe import Interrupted

COLOURS = {"red": (255, 0, 0), "white": (255, 255, 255), "black": (0, 0, 0), "blue": (0, 0, 255)}


def png(colour, size=(40, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(out, format="PNG")
    return out.getvalue()


def image_entry(data: bytes) -> str:
    return f"images/{hashlib.sha256(data).hexdigest()}.png"


def write_export(path, rows, images, *, folder=False):
    """The layout ``annotation/services/exports.py`` writes: data.jsonl, then images/<sha256>.<ext>."""
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    if folder:
        (path / "images").mkdir(parents=True)
        (path / "data.jsonl").write_text(lines)
        for name, data in images.items():
            (path / name).write_bytes(data)
        return path
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.jsonl", lines)
        for name, data in images.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    return path


@pytest.fixture(scope="module")
def images():
    return {colour: png(colour) for colour in COLOURS}


def row(images, a, b, label, split="train", caption="a red cat"):
    return {
        "caption": caption,
        "jpg_0": image_entry(images[a]),
        "jpg_1": image_entry(images[b]),
        "label_0": label,
        "split": split,
    }


@pytest.fixture
def export_path(tmp_path, images):
    rows = [
        row(images, "red", "blue", 1.0),
        row(images, "red", "blue", 0.0, caption="a blue sky"),
        row(images, "white", "black", 0.5),
        row(images, "white", "black", 1.0, split="test", caption="the sun"),
    ]
    return write_export(tmp_path / "v1.jsonl", rows, {image_entry(d): d for d in images.values()})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "sd": load_diffusion(save_tiny_sd(root / "sd")),
        "pixel": load_diffusion(save_tiny_pixel(root / "pixel")),
        "pixel_uncond": load_diffusion(save_tiny_pixel(root / "pixel_uncond", conditional=False)),
    }


def test_pick_a_pic_order():
    assert pick_a_pic_order(1) == (0, 1)  # jpg_0 wins
    assert pick_a_pic_order(1.0) == (0, 1)
    assert pick_a_pic_order(0) == (1, 0)  # jpg_1 wins
    assert pick_a_pic_order(0.5) is None  # tie dropped
    assert pick_a_pic_order(0.5, keep_ties=True) == (0, 1)
    for bad in (0.3, 2, float("nan")):
        with pytest.raises(ValueError):
            pick_a_pic_order(bad)


def test_rows_become_winner_loser_pairs_by_label_and_ties_are_dropped_and_counted(export_path, images):
    with open_image_export(export_path) as export:
        pairs, report = read_pairs(export, split="train")
        kept_ties, _ = read_pairs(export, split="train", keep_ties=True)
        test, _ = read_pairs(export, split="test")
    red, blue = image_entry(images["red"]), image_entry(images["blue"])
    assert [(p.winner, p.loser, p.line) for p in pairs] == [(red, blue, 1), (blue, red, 2)]
    assert pairs[1].caption == "a blue sky"
    assert report.kept == 2 and report.dropped == {"tie": 1}
    assert len(kept_ties) == 3 and kept_ties[2].winner == image_entry(images["white"])
    assert [(p.line, p.split, p.caption) for p in test] == [(4, "test", "the sun")]


def test_images_are_resized_center_cropped_and_scaled_to_minus_one_one():
    wide = Image.new("RGB", (64, 32), COLOURS["white"])
    wide.paste(COLOURS["red"], (0, 0, 8, 32))  # a stripe the center crop removes
    out = io.BytesIO()
    wide.save(out, format="PNG")
    pixels = decode_image(out.getvalue(), resolution=16)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32
    assert torch.allclose(pixels, torch.ones_like(pixels))
    black = decode_image(png("black", (8, 12)), resolution=16)  # upscaled too
    assert black.shape == (3, 16, 16) and torch.allclose(black, -torch.ones_like(black))
    grey = decode_image(png("red"), resolution=16, channels=1)
    assert grey.shape == (1, 16, 16) and -1 < grey.mean() < 0  # red is dark in luma (76/255)


def test_a_missing_or_undecodable_image_is_an_error_naming_its_line(tmp_path, images):
    broken = b"not an image at all"
    rows = [
        row(images, "red", "blue", 1.0),
        {**row(images, "red", "blue", 1.0), "jpg_1": image_entry(broken)},
    ]
    files = {image_entry(images["red"]): images["red"], image_entry(images["blue"]): images["blue"]}
    with open_image_export(write_export(tmp_path / "missing.zip", rows, files)) as export:
        pairs, _ = read_pairs(export)
        with pytest.raises(ImageDataError, match=r"line 2: image 'images/.*' is not in the export"):
            load_images(export, [(p.loser, p.line) for p in pairs], resolution=8)
    files[image_entry(broken)] = broken
    with open_image_export(write_export(tmp_path / "broken.zip", rows, files)) as export:
        pairs, _ = read_pairs(export)
        with pytest.raises(ImageDataError, match=r"line 2: image .* cannot be decoded"):
            load_images(export, [(p.loser, p.line) for p in pairs], resolution=8)
    bad = write_export(tmp_path / "bad.zip", [rows[0], {"caption": "x", "jpg_0": "a", "jpg_1": "b"}], files)
    with open_image_export(bad) as export, pytest.raises(ImageDataError, match="line 2: missing label_0"):
        read_pairs(export)


def _forbid_encoders(monkeypatch, components):
    def boom(*args, **kwargs):
        raise AssertionError("an encoder ran on a cache hit")

    if components.vae is not None:
        monkeypatch.setattr(components.vae, "encode", boom)
    for encoder in components.text_encoders:
        monkeypatch.setattr(encoder, "forward", boom)


def test_sd_latents_are_scaled_posterior_means_and_a_second_call_runs_no_encoder(
    export_path, models, tmp_path, monkeypatch
):
    sd = models["sd"]
    with open_image_export(export_path) as export:
        pairs, _ = read_pairs(export, split="train")
        calls = []
        first, cached = cached_encodings(
            sd, export, pairs, cache_dir=tmp_path, batch_size=1, between_batches=lambda: calls.append(1)
        )
        assert not cached and len(calls) == 2 + 2  # two distinct images, two distinct captions
        winners, losers, text = first.batch(torch.arange(len(pairs)))
        assert winners.shape == losers.shape == (2, 4, 8, 8)
        assert text.hidden.shape == (2, 16, 32) and text.pooled is None
        pixels = load_images(export, [(pairs[0].winner, 1)], resolution=32)
        expected = sd.vae.encode(pixels).latent_dist.mean * sd.vae.config.scaling_factor
        assert torch.allclose(winners[0], expected[0], atol=1e-5)
        assert torch.equal(winners[1], losers[0])  # red/blue swapped in row 2: stored once
        _forbid_encoders(monkeypatch, sd)
        second, cached = cached_encodings(sd, export, pairs, cache_dir=tmp_path)
    assert cached
    for name in ("images", "winner", "loser", "hidden", "caption"):
        assert torch.equal(getattr(first, name), getattr(second, name))


def _files(tmp_path, prefix):
    return {p.name for p in tmp_path.glob(f"{prefix}-*.safetensors")}


def test_cache_key_changes_with_vae_weights_resolution_and_rows(export_path, models, tmp_path, images):
    sd = models["sd"]
    with open_image_export(export_path) as export:
        pairs, _ = read_pairs(export)
        cached_encodings(sd, export, pairs, cache_dir=tmp_path)
        small, cached = cached_encodings(sd, export, pairs, cache_dir=tmp_path, resolution=16)
        assert not cached and small.images.shape[1:] == (4, 4, 4)
        cached_encodings(sd, export, pairs[:1], cache_dir=tmp_path)
        assert len(_files(tmp_path, "latents")) == 3 and len(_files(tmp_path, "text")) == 2
        param = next(sd.vae.parameters())
        with torch.no_grad():
            param.add_(0.01)
        try:
            _, cached = cached_encodings(sd, export, pairs, cache_dir=tmp_path)
        finally:
            with torch.no_grad():
                param.sub_(0.01)
    assert not cached and len(_files(tmp_path, "latents")) == 4 and len(_files(tmp_path, "text")) == 2
    other = {image_entry(d): d for d in images.values()}
    other[image_entry(images["red"])] = images["white"]  # same name, other bytes
    with open_image_export(export_path) as export:
        rows = [r for _, r in export.lines()]
    with open_image_export(write_export(tmp_path / "other.zip", rows, other)) as export:
        _, cached = cached_encodings(sd, export, read_pairs(export)[0], cache_dir=tmp_path)
    assert not cached and len(_files(tmp_path, "latents")) == 5


def test_pixel_space_model_caches_its_grey_pixels_and_unconditional_needs_no_text(
    tmp_path, models, images, monkeypatch
):
    rows = [row(images, "white", "black", 1.0), row(images, "red", "white", 0.0)]
    path = write_export(tmp_path / "folder", rows, {image_entry(d): d for d in images.values()}, folder=True)
    with open_image_export(path) as export:
        pairs, _ = read_pairs(export)
        encoded, cached = cached_encodings(models["pixel"], export, pairs, cache_dir=tmp_path)
        winners, losers, text = encoded.batch(torch.tensor([0, 1]))
        assert not cached and winners.shape == (2, 1, 16, 16) and text.hidden.shape == (2, 16, 32)
        assert torch.allclose(winners[0], torch.ones(1, 16, 16)) and torch.equal(winners[1], winners[0])
        assert torch.allclose(losers[0], -torch.ones(1, 16, 16))
        expected = load_images(export, [(pairs[1].loser, 2)], resolution=16, channels=1)
        assert torch.equal(losers[1], expected[0])
        uncond, _ = cached_encodings(models["pixel_uncond"], export, pairs, cache_dir=tmp_path)
        assert uncond.hidden is None and uncond.batch(torch.tensor([0]))[2] is None
        _forbid_encoders(monkeypatch, models["pixel"])
        assert cached_encodings(models["pixel"], export, pairs, cache_dir=tmp_path)[1]


def test_between_batches_can_stop_the_pass_before_anything_is_stored(export_path, models, tmp_path):
    def stop():
        raise Interrupted

    with open_image_export(export_path) as export, pytest.raises(Interrupted):
        cached_encodings(
            models["sd"], export, read_pairs(export)[0], cache_dir=tmp_path / "cache", between_batches=stop
        )
    assert not (tmp_path / "cache").exists()
