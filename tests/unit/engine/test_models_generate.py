"""Model specs, generation and per-token rewards on tiny models; the bundled model in a slow test."""

import time

import pytest
import torch

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import tokenize_pair
from training.engine.lm.generate import GenerationConfig, generate
from training.engine.lm.logps import token_rewards
from training.engine.lm.models import (
    ModelSpec,
    ModelUnavailableError,
    load_model,
    load_tokenizer,
    weights_fingerprint,
)
from training.engine.lm.tiny import tiny_llama


def test_model_spec_parsing(tmp_path):
    assert str(ModelSpec.parse("bundled")) == "bundled:smollm2-135m-instruct"
    assert ModelSpec.parse("hub:org/name") == ModelSpec("hub", "org/name")
    assert ModelSpec.parse(str(tmp_path)).kind == "local"
    with pytest.raises(ValueError, match="use bundled"):
        ModelSpec.parse("no/such/thing")


def test_missing_local_folder_fails_clearly(tmp_path):
    with pytest.raises(ModelUnavailableError, match="config.json"):
        load_model(f"local:{tmp_path}")


def test_hub_id_offline_fails_with_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="offline"):
        load_model("hub:prefstudio-test/not-a-model")


def test_tiny_models_are_seeded_and_saved_folders_load(tmp_path):
    a, b, c = load_model("tiny"), load_model("tiny"), load_model("tiny:seed=1")
    assert weights_fingerprint(a) == weights_fingerprint(b) != weights_fingerprint(c)
    a.save_pretrained(tmp_path)
    assert weights_fingerprint(load_model(f"local:{tmp_path}")) == weights_fingerprint(a)


def test_generation_modes_return_text(tokenizer):
    model = tiny_llama(len(tokenizer))
    for mode in ("greedy", "sample", "beam"):
        out = generate(
            model, tokenizer, ["cat dog"], GenerationConfig(max_new_tokens=5, mode=mode, num_beams=2)
        )
        assert len(out) == 1 and isinstance(out[0], str)
    with pytest.raises(ValueError, match="mode"):
        GenerationConfig(mode="topk")


def test_token_rewards_are_zero_against_itself_and_nonzero_after_change(tokenizer):
    pair = tokenize_pair({"prompt": "cat", "chosen": "dog", "rejected": "SUN"}, tokenizer, 0)
    collator = PackingCollator(tokenizer.pad_token_id)
    ref = tiny_llama(len(tokenizer))
    chosen, rejected = token_rewards(ref, ref, pair, collator, beta=0.1)
    assert chosen.shape == (len(pair.chosen_ids),) and torch.all(chosen == 0)
    policy = tiny_llama(len(tokenizer), seed=3)
    chosen, _ = token_rewards(policy, ref, pair, collator, beta=0.1)
    assert torch.any(chosen != 0)


@pytest.mark.slow
def test_bundled_model_converts_loads_fast_and_answers_sensibly(tmp_path_factory, monkeypatch):
    from training.engine.lm.models import model_cache_dir

    if not (model_cache_dir() / "smollm2-135m-instruct" / "config.json").is_file():
        monkeypatch.setenv("MODEL_CACHE", str(tmp_path_factory.mktemp("models")))
    load_model("bundled")  # converts on first use
    tick = time.perf_counter()
    model = load_model("bundled")
    load_seconds = time.perf_counter() - tick
    tokenizer = load_tokenizer("bundled")
    assert model.dtype == torch.float32 and not hasattr(model.config, "quantization_config")
    answer = generate(
        model, tokenizer, ["What is the capital of France?"], GenerationConfig(max_new_tokens=16)
    )[0]
    assert "Paris" in answer
    print(f"bundled load {load_seconds:.2f}s")


def test_token_rewards_with_lora_use_the_adapter_free_base(tokenizer):
    from peft import LoraConfig, get_peft_model

    pair = tokenize_pair({"prompt": "cat", "chosen": "dog", "rejected": "SUN"}, tokenizer, 0)
    collator = PackingCollator(tokenizer.pad_token_id)
    policy = get_peft_model(tiny_llama(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    chosen, _ = token_rewards(policy, None, pair, collator, beta=0.1)
    assert torch.all(chosen == 0)  # a fresh adapter (B = 0) equals its base
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.fill_(0.1)
    chosen, _ = token_rewards(policy, None, pair, collator, beta=0.1)
    assert torch.any(chosen != 0)


def test_lora_checkpoint_folder_loads_as_a_merged_model(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(len(tokenizer))
    base.save_pretrained(tmp_path / "base")
    base = load_model(f"local:{tmp_path / 'base'}")
    policy = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.fill_(0.05)
    policy.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = policy(input_ids=ids).logits
        merged = load_model(f"local:{tmp_path / 'adapter'}")
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=0)
