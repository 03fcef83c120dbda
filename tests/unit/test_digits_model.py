"""The embedded digits diffusion model: data, classifier, the bundled spec, one-time training, and samples
that show the digit their caption names.

The model is trained once per model cache (``$MODEL_CACHE``, else ``<repo>/var/models``) by the
session fixture and reused by every later run; the other trainings here are a few steps long.
"""

import threading

import pytest
import torch
from safetensors.torch import load_file

from training.engine.diffusion import digits
from training.engine.diffusion.digits import (
    caption_for,
    classify_digits,
    digits_images,
    ensure_digits_model,
    ink,
    train_digits_model,
)
from training.engine.diffusion.models import load_diffusion
from training.engine.diffusion.sample import sample_images
from training.engine.diffusion.tiny import MAX_TOKENS, save_tiny_pixel, tiny_clip_tokenizer
from training.engine.runtime.config import ConfigError

SAMPLE_STEPS = 25
GUIDANCE = 3.0


@pytest.fixture(scope="session")
def digits_folder():
    return ensure_digits_model()


def test_digits_are_16_pixel_images_with_bright_ink_on_a_dark_ground():
    images, labels = digits_images()
    assert images.shape == (1797, 1, 16, 16) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.long and set(labels.tolist()) == set(range(10))
    assert images.min() >= -1 and images.max() <= 1
    assert (images[:, :, :, 0] == -1).float().mean() > 0.9  # the left column is ground, nearly always
    assert torch.all(ink(images) < 0.5) and ink(torch.ones(1, 1, 16, 16)).item() == 1.0


def test_captions_tokenize_whole_within_the_tiny_tokenizer():
    tokenizer = tiny_clip_tokenizer()
    for label in range(10):
        ids = tokenizer(caption_for(label)).input_ids
        assert len(ids) <= MAX_TOKENS
        assert tokenizer.convert_ids_to_tokens(ids)[-2] == f"{label}</w>"


def test_classifier_reads_the_training_digits():
    images, labels = digits_images()
    assert (classify_digits(images) == labels.numpy()).mean() > 0.9


def test_bundled_digits_spec_loads_a_conditioned_16_pixel_model(digits_folder):
    for spec in ("bundled:digits", "bundled:digits-diffusion-v1"):
        components = load_diffusion(spec)
        assert components.kind == "pixel" and components.conditioned
        assert components.resolution == 16 and components.unet.config.in_channels == 1
        assert components.noise_scheduler.config.prediction_type == "epsilon"


def test_unknown_bundled_diffusion_model_names_the_known_ones():
    with pytest.raises(ConfigError, match="bundled:digits"):
        load_diffusion("bundled:nope")


def test_samples_show_the_digit_their_caption_names(digits_folder):
    components = load_diffusion(digits_folder)
    labels = [digit for digit in range(10) for _ in range(4)]
    images = sample_images(
        components,
        seeds=list(range(len(labels))),
        captions=[caption_for(d) for d in labels],
        steps=SAMPLE_STEPS,
        guidance_scale=GUIDANCE,
        batch_size=len(labels),
    )
    rate = (classify_digits(images) == labels).mean()
    print(f"digits samples read as their caption: {rate:.2f}")
    assert rate > 0.5  # most samples (0.625 measured here; 0.1 is chance)


def test_a_present_model_is_returned_without_training(digits_folder, monkeypatch):
    index = digits_folder / "model_index.json"
    before = index.stat().st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(digits, "train_digits_model", must_not_train)
    assert ensure_digits_model() == digits_folder
    assert index.stat().st_mtime_ns == before


def test_concurrent_callers_train_once_and_leave_no_scratch(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODEL_CACHE", str(cache))
    calls = []

    def fake_train(folder, **kwargs):
        calls.append(folder)
        return save_tiny_pixel(folder)

    monkeypatch.setattr(digits, "train_digits_model", fake_train)
    results = []
    workers = [threading.Thread(target=lambda: results.append(ensure_digits_model())) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(calls) == 1 and results == [cache / "digits-diffusion-v1"] * 2
    assert sorted(p.name for p in cache.iterdir()) == ["digits-diffusion-v1", "digits-diffusion-v1.lock"]
    assert load_diffusion(results[0]).kind == "pixel"


def test_training_is_deterministic(tmp_path):
    first = train_digits_model(tmp_path / "a", steps=2)
    second = train_digits_model(tmp_path / "b", steps=2)
    a = load_file(first / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(second / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    untrained = digits.digits_unet().state_dict()
    assert any(not torch.equal(a[k], untrained[k]) for k in a)
