"""Device choice: auto picks CUDA only where present, a missing one is a clear error, batches move whole."""

import pytest
import torch

from training.engine.lm.collate import PackedBatch, PackingCollator
from training.engine.lm.data import tokenize_rows
from training.engine.methods import train
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.runtime.config import ConfigError
from training.engine.runtime.device import DeviceUnavailable, resolve_device


def test_auto_is_cuda_exactly_when_the_machine_has_it():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_names_the_field():
    with pytest.raises(DeviceUnavailable, match="device: 'cuda:1'.*no CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "", 3])
def test_a_bad_device_is_refused_on_load(bad, tmp_path):
    with pytest.raises(ConfigError, match="device"):
        DPOConfig(model="tiny", train_file="t.jsonl", output_dir=str(tmp_path), device=bad)


def test_a_packed_batch_moves_every_tensor(tokenizer, make_rows):
    pairs, _ = tokenize_rows(make_rows(3, seed=1), tokenizer, max_length=None)
    batch = PackingCollator(tokenizer.pad_token_id, device=torch.device("meta"))(pairs)
    tensors = [v for v in vars(batch).values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == len([f for f in PackedBatch.__dataclass_fields__ if f != "spans"])
    assert all(t.device.type == "meta" for t in tensors)
    assert batch.spans == PackingCollator(tokenizer.pad_token_id)(pairs).spans


def test_a_run_on_an_explicit_cpu_device(tmp_path, make_rows):
    import json

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(8, seed=2)))
    config = DPOConfig(
        model="tiny",
        train_file=str(data),
        output_dir=str(tmp_path / "o"),
        ref_cache_dir=str(tmp_path / "r"),
        device="cpu",
        max_steps=2,
        batch_size=4,
        save_final=False,
    )
    result = train(config)
    assert result.status == "succeeded" and result.step == 2
