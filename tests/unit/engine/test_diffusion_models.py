"""Diffusion model loading: tiny SD, SDXL and pixel folders saved in diffusers layout and loaded back."""

import json
import shutil
import time

import pytest
import torch

from training.engine.diffusion.conditioning import encode_captions, sdxl_time_ids, unet_conditioning
from training.engine.diffusion.models import load_diffusion
from training.engine.diffusion.tiny import TEXT_HIDDEN, save_tiny_pixel, save_tiny_sd, save_tiny_sdxl
from training.engine.runtime.config import ConfigError

CAPTIONS = ["a handwritten 3", "a red cat on the mat"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion")
    return {
        "sd": save_tiny_sd(root / "sd"),
        "sdxl": save_tiny_sdxl(root / "sdxl"),
        "pixel": save_tiny_pixel(root / "pixel"),
        "pixel_uncond": save_tiny_pixel(root / "pixel_uncond", conditional=False),
    }


def _predict(components, text):
    unet = components.unet
    side = unet.config.sample_size
    noisy = torch.randn(
        len(CAPTIONS), unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0)
    )
    timesteps = torch.tensor([1, 999])
    with torch.no_grad():
        return noisy, unet(noisy, timesteps, **unet_conditioning(components, text)).sample


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_latent_folder_loads_and_unet_predicts_noise_of_the_latent_shape(folders, name):
    c = load_diffusion(f"local:{folders[name]}")
    assert c.kind == name and c.resolution == 32 and c.vae_scale_factor == 4
    assert len(c.text_encoders) == len(c.tokenizers) == (2 if name == "sdxl" else 1)
    assert not any(p.requires_grad for p in c.unet.parameters())
    text = encode_captions(c, CAPTIONS)
    assert text.hidden.shape == (2, 16, TEXT_HIDDEN * len(c.text_encoders))
    assert (text.pooled is not None) == (name == "sdxl")
    noisy, pred = _predict(c, text)
    assert pred.shape == noisy.shape == (2, 4, 8, 8) and torch.isfinite(pred).all()
    latents = c.vae.encode(torch.rand(1, 3, 32, 32) * 2 - 1).latent_dist.mean
    assert latents.shape == (1, 4, 8, 8)


def test_sdxl_unet_reads_time_ids_as_the_pipeline_builds_them(folders):
    c = load_diffusion(folders["sdxl"])
    text = encode_captions(c, CAPTIONS)
    kwargs = unet_conditioning(c, text)
    added = kwargs["added_cond_kwargs"]
    assert added["text_embeds"].shape == (2, TEXT_HIDDEN)
    assert added["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2
    assert sdxl_time_ids(1, original_size=(64, 48), target_size=(32, 32), crop_top_left=(4, 0)).tolist() == [
        [64, 48, 4, 0, 32, 32]
    ]
    _, base = _predict(c, text)
    cropped = unet_conditioning(c, text, original_size=(512, 512), crop_top_left=(8, 8))
    with torch.no_grad():
        noisy = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        other = c.unet(noisy, torch.tensor([1, 999]), **cropped).sample
    assert not torch.allclose(base, other)


def test_pixel_folders_load_without_a_vae(folders):
    c = load_diffusion(folders["pixel"])
    assert (c.kind, c.vae, c.resolution, c.vae_scale_factor) == ("pixel", None, 16, 1)
    noisy, pred = _predict(c, encode_captions(c, CAPTIONS))
    assert pred.shape == noisy.shape == (2, 1, 16, 16)
    plain = load_diffusion(folders["pixel_uncond"])
    assert type(plain.unet).__name__ == "UNet2DModel" and plain.text_encoders == ()
    noisy, pred = _predict(plain, None)
    assert pred.shape == (2, 1, 16, 16)
    assert plain.noise_scheduler.config.prediction_type == "epsilon"
    assert plain.scheduler_config["_class_name"] == "DDPMScheduler"


def test_noise_scheduler_keeps_the_folder_schedule(folders):
    c = load_diffusion(folders["sd"])
    assert type(c.noise_scheduler).__name__ == "DDPMScheduler"
    assert c.scheduler_config["_class_name"] == "DDIMScheduler"
    assert c.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert c.noise_scheduler.config.num_train_timesteps == 1000


def test_folder_missing_unet_names_what_is_missing(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders["sd"], broken)
    shutil.rmtree(broken / "unet")
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(ConfigError, match=r"lacks unet/, tokenizer/"):
        load_diffusion(f"local:{broken}")


def test_folder_that_is_not_a_diffusers_model_fails_clearly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="not a diffusers model folder"):
        load_diffusion(tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        load_diffusion(str(tmp_path / "nowhere"))


def test_unknown_hub_id_offline_fails_fast_naming_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"hub:prefstudio-test/no-such-sd.*offline"):
        load_diffusion("hub:prefstudio-test/no-such-sd")
    assert time.perf_counter() - start < 5


def test_hub_id_in_the_local_cache_loads_offline(folders, tmp_path, monkeypatch):
    snapshot = tmp_path / "models--org--tiny-sd" / "snapshots" / ("0" * 40)
    shutil.copytree(folders["sd"], snapshot)
    (tmp_path / "models--org--tiny-sd" / "refs").mkdir()
    (tmp_path / "models--org--tiny-sd" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert load_diffusion("hub:org/tiny-sd").kind == "sd"


def test_fingerprint_changes_when_a_weight_changes(folders):
    a, b = load_diffusion(folders["sd"]), load_diffusion(folders["sd"])
    assert a.fingerprint() == b.fingerprint()
    vae_print, text_print = a.fingerprint("vae"), a.fingerprint("text_encoders")
    with torch.no_grad():
        next(a.unet.parameters()).view(-1)[0] += 1e-3
    assert a.fingerprint() != b.fingerprint()
    assert (a.fingerprint("vae"), a.fingerprint("text_encoders")) == (vae_print, text_print)
    assert a.fingerprint("vae") != a.fingerprint("unet")


def test_tiny_models_are_seeded(tmp_path):
    one = load_diffusion(save_tiny_sd(tmp_path / "a", seed=3)).fingerprint()
    assert one == load_diffusion(save_tiny_sd(tmp_path / "b", seed=3)).fingerprint()
    assert one != load_diffusion(save_tiny_sd(tmp_path / "c", seed=4)).fingerprint()


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_tiny_folders_are_what_the_diffusers_pipelines_load(folders, name):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if name == "sdxl" else StableDiffusionPipeline
    extra = {} if name == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(folders[name], **extra)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(CAPTIONS[0], num_inference_steps=1, height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3)
