"""The diffusion_dpo recipe on the runtime, end to end on tiny SD, SDXL and pixel-space models of the real
classes: metrics, samples, LoRA and full checkpoints in diffusers layout, exact resume, caches, branches."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from training.engine.diffusion import encode_cache
from training.engine.diffusion.models import load_diffusion
from training.engine.diffusion.tiny import (
    save_tiny_pixel,
    save_tiny_sd,
    save_tiny_sdxl,
    write_synthetic_pairs,
)
from training.engine.methods import METHODS, config_from_dict, train
from training.engine.recipes.diffusion_dpo import DiffusionDPORecipe
from training.engine.runtime.checkpoint import latest_checkpoint
from training.engine.runtime.config import ConfigError
from training.engine.runtime.loop import NonFiniteError, prepare, run
from training.engine.runtime.metrics import read_metrics

TRAIN_METRICS = {
    "loss",
    "implicit_acc",
    "mse/winner",
    "mse/loser",
    "mse/ref_winner",
    "mse/ref_loser",
    "inner",
    "grad_norm",
    "learning_rate",
    "throughput/pairs_per_s",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion-models")
    return {
        "sd": save_tiny_sd(root / "sd"),
        "sdxl": save_tiny_sdxl(root / "sdxl"),
        "pixel": save_tiny_pixel(root / "pixel"),
    }


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return {
        "rgb": write_synthetic_pairs(root / "rgb.zip", 8, n_test=4, ties=2),
        "grey": write_synthetic_pairs(root / "grey.zip", 8, n_test=2, size=16),
    }


def config(models, pairs, tmp_path, name="out", *, model="sd", data="rgb", **overrides):
    fields = {
        "method": "diffusion_dpo",
        "model": f"local:{models[model]}",
        "train_file": str(pairs[data]),
        "output_dir": str(tmp_path / name),
        "encode_cache_dir": str(tmp_path / "cache"),
        "batch_size": 4,
        "learning_rate": 1e-3,
        "sample_steps": 3,
        "sample_count": 2,
        **overrides,
    }
    return config_from_dict(fields)


class Recorder:
    def __init__(self):
        self.calls, self.saved = [], []

    def log(self, metrics, step):
        self.calls.append((step, dict(metrics)))

    def on_saved(self, path):
        self.saved.append(path.name)


def test_lora_run_logs_the_metrics_draws_samples_and_writes_diffusers_layout(models, pairs, tmp_path):
    recorder = Recorder()
    cfg = config(models, pairs, tmp_path, max_steps=2, eval_steps=1, epochs=2)
    result = train(cfg, callbacks=[recorder])
    assert result.status == "succeeded" and result.step == 2
    assert result.dropped == {"train/tie": 2}
    first = recorder.calls[0][1]
    assert set(first) >= TRAIN_METRICS
    assert {"eval/loss", "eval/implicit_acc", "eval/mse/winner", "eval/mse/ref_loser"} <= set(first)
    # LoRA's B starts at zero: before the first update the trained UNet is the reference exactly
    assert first["mse/winner"] == pytest.approx(first["mse/ref_winner"], abs=1e-6)
    assert first["inner"] == pytest.approx(0.0, abs=1e-6)

    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-0", "step-1", "step-2"]
    assert [n for n in recorder.saved if n.startswith("step-")] == ["step-0", "step-1", "step-2"]
    grid = json.loads((out / "samples" / "step-2" / "samples.json").read_text())
    assert [s["seed"] for s in grid["samples"]] == [0, 1] and grid["steps"] == 3
    assert (out / "samples" / "step-2" / "sample-0.png").read_bytes()[:4] == b"\x89PNG"
    # the samples changed as the adapter trained (same captions and seeds)
    before = (out / "samples" / "step-0" / "sample-0.png").read_bytes()
    assert before != (out / "samples" / "step-2" / "sample-0.png").read_bytes()

    # the checkpoint's LoRA file loads with the diffusers pipeline's own loader, and final/ holds the
    # same model merged into a plain UNet
    pipe = StableDiffusionPipeline.from_pretrained(models["sd"], safety_checker=None)
    pipe.load_lora_weights(str(out / "checkpoint-2"))
    final = load_diffusion(out / "final")
    assert (out / "final" / "pytorch_lora_weights.safetensors").is_file()
    noisy, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    text = torch.randn(1, 16, 32)
    with torch.no_grad():
        merged = final.unet(noisy, t, encoder_hidden_states=text).sample
        adapted = pipe.unet(noisy, t, encoder_hidden_states=text).sample
        base = load_diffusion(models["sd"]).unet(noisy, t, encoder_hidden_states=text).sample
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(merged, base, atol=1e-6)


def test_full_finetuning_keeps_a_frozen_reference_and_saves_a_unet_from_pretrained_loads(
    models, pairs, tmp_path
):
    cfg = config(models, pairs, tmp_path, max_steps=2, lora=False)
    recipe = prepare(DiffusionDPORecipe(cfg), cfg)
    reference_before = {k: v.clone() for k, v in recipe.reference_unet.state_dict().items()}
    result = run(recipe, cfg)
    for name, value in recipe.reference_unet.state_dict().items():
        torch.testing.assert_close(value, reference_before[name], rtol=0, atol=0)
    unet = UNet2DConditionModel.from_pretrained(result.last_checkpoint, subfolder="unet")
    trained = recipe.components.unet.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in unet.state_dict().items())
    assert any(not torch.equal(v, reference_before[k]) for k, v in unet.state_dict().items())
    assert load_diffusion(result.final_model).kind == "sd"


def test_lora_keeps_one_unet_and_trains_only_adapters(models, pairs, tmp_path):
    cfg = config(models, pairs, tmp_path, max_steps=1)
    recipe = prepare(DiffusionDPORecipe(cfg), cfg)
    assert recipe.reference_unet is None
    trainable = [n for n, p in recipe.components.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def _comparable(rows):
    return [{k: v for k, v in row.items() if not k.startswith("throughput/")} for row in rows]


def test_a_cancelled_and_resumed_run_reproduces_the_uninterrupted_metrics(models, pairs, tmp_path):
    common = dict(max_steps=5, epochs=3, eval_steps=2, save_steps=2, lr_scheduler="cosine")
    full = train(config(models, pairs, tmp_path, "full", **common))
    seen = Recorder()
    cut = train(
        config(models, pairs, tmp_path, "cut", **common),
        callbacks=[seen],
        should_cancel=lambda: bool(seen.calls) and seen.calls[-1][0] >= 3,
    )
    assert cut.status == "cancelled" and cut.step == 3
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-3"
    resumed = train(config(models, pairs, tmp_path, "cut", **common), resume=True)
    assert resumed.status == "succeeded" and resumed.step == 5
    a = _comparable(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    b = _comparable(read_metrics(tmp_path / "cut" / "metrics.jsonl"))
    assert a == b
    assert full.eval_metrics == resumed.eval_metrics


def test_a_second_job_takes_latents_and_text_from_the_cache_and_runs_no_encoder(
    models, pairs, tmp_path, monkeypatch
):
    first = prepare(
        DiffusionDPORecipe(config(models, pairs, tmp_path, "a", max_steps=1)),
        config(models, pairs, tmp_path, "a", max_steps=1),
    )
    assert not first.encodings_cached

    def boom(*args, **kwargs):
        raise AssertionError("an encoder ran although the cache holds the pairs")

    monkeypatch.setattr(encode_cache, "encode_images", boom)
    monkeypatch.setattr(encode_cache, "encode_captions", boom)
    cfg = config(models, pairs, tmp_path, "b", max_steps=2)
    recipe = prepare(DiffusionDPORecipe(cfg), cfg)
    assert recipe.encodings_cached and recipe.report()["encodings_were_cached"]
    assert run(recipe, cfg).status == "succeeded"


@pytest.mark.parametrize("loss_type", ["ipo", "sft"])
def test_every_loss_branch_trains(models, pairs, tmp_path, loss_type):
    recorder = Recorder()
    train(config(models, pairs, tmp_path, max_steps=2, loss_type=loss_type), callbacks=[recorder])
    metrics = recorder.calls[0][1]
    if loss_type == "sft":
        assert metrics["loss"] == pytest.approx(metrics["mse/winner"], rel=1e-5)
    else:  # (−inner − 1/β)² with inner exactly 0 before the first update
        assert metrics["loss"] == pytest.approx((1 / 5000.0) ** 2, rel=1e-3)


@pytest.mark.parametrize(("model", "data"), [("sdxl", "rgb"), ("pixel", "grey")])
def test_sdxl_and_pixel_space_models_train_and_sample(models, pairs, tmp_path, model, data):
    result = train(config(models, pairs, tmp_path, model=model, data=data, max_steps=1, precision="bf16"))
    assert result.status == "succeeded"
    assert (tmp_path / "out" / "samples" / "step-1" / "sample-1.png").is_file()
    assert load_diffusion(result.final_model).kind == model


def test_v_prediction_models_train_toward_the_velocity(models, pairs, tmp_path):
    cfg = config(models, pairs, tmp_path, max_steps=1)
    recipe = DiffusionDPORecipe(cfg)
    recipe.components = load_diffusion(models["sd"])
    scheduler = recipe.components.noise_scheduler
    recipe.components.noise_scheduler = type(scheduler).from_config(
        scheduler.config, prediction_type="v_prediction"
    )
    calls = []
    original = recipe.components.noise_scheduler.get_velocity

    def velocity(*args):
        calls.append(1)
        return original(*args)

    recipe.components.noise_scheduler.get_velocity = velocity
    assert run(prepare(recipe, cfg), cfg).status == "succeeded" and calls


def test_nan_guard_stops_the_run_naming_the_step(models, pairs, tmp_path):
    cfg = config(models, pairs, tmp_path, max_steps=2)
    recipe = prepare(DiffusionDPORecipe(cfg), cfg)
    recipe.train_data.images[:] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 1: loss is nan"):
        run(recipe, cfg)


def test_a_cancel_during_the_encoding_pass_ends_the_run_cancelled_with_nothing_trained(
    models, pairs, tmp_path
):
    result = train(config(models, pairs, tmp_path, max_steps=2), should_cancel=lambda: True)
    assert result.status == "cancelled" and result.step == 0


def test_the_method_trains_only_image_pairs_and_bad_fields_name_themselves(models, pairs, tmp_path):
    assert METHODS["diffusion_dpo"].accepts == ("image_pair",)
    assert "image_pair" not in METHODS["dpo"].accepts
    with pytest.raises(ConfigError, match="loss_type"):
        config(models, pairs, tmp_path, loss_type="hinge")
    with pytest.raises(ConfigError, match="sft_weight"):
        config(models, pairs, tmp_path, loss_type="sft", sft_weight=1.0)
    with pytest.raises(ConfigError, match="sample_count"):
        config(models, pairs, tmp_path, sample_count=1000)
