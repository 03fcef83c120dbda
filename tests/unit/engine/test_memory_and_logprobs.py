"""The target log-prob function against cross_entropy, and trainable weights moved off the file map."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from training.engine.lm.logps import TargetLogProbs
from training.engine.lm.models import load_model
from training.engine.lm.tiny import tiny_llama
from training.engine.runtime.memory import own_trainable_weights


def test_target_logprobs_match_cross_entropy_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(9, 13, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 12, 7, 0, 5, 5, 1])  # repeated targets, both ends of the vocabulary
    upstream = torch.randn(9, dtype=torch.float64)
    ours = TargetLogProbs.apply(logits, targets)
    (ours * upstream).sum().backward()
    ours_grad, logits.grad = logits.grad, None
    theirs = -F.cross_entropy(logits, targets, reduction="none")
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_grad, logits.grad, rtol=0, atol=1e-12)


def test_target_logprobs_refuse_a_second_backward_over_the_same_graph():
    logits = torch.randn(4, 6, requires_grad=True)
    out = TargetLogProbs.apply(logits, torch.tensor([1, 2, 3, 4])).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="used up by an earlier backward"):
        out.backward()


def _file_backed(tensor: torch.Tensor, path) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of the file ``path`` (read from /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return len(fields) > 5 and fields[5] == str(path)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_trainable_weights_leave_the_file_map_and_stay_tied(tmp_path, tokenizer):
    tiny_llama(len(tokenizer), seed=0, hidden=256).save_pretrained(tmp_path)  # tied input/output embeddings
    weights = (tmp_path / "model.safetensors").resolve()
    model = load_model(f"local:{tmp_path}")
    frozen = model.model.norm.weight
    frozen.requires_grad_(False)
    up = model.model.layers[0].mlp.up_proj.weight
    assert _file_backed(up, weights), "loading is expected to map the file (else this test proves nothing)"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    own_trainable_weights(model)
    assert not _file_backed(up, weights)
    assert _file_backed(frozen, weights)  # a frozen weight is never written: it may stay mapped
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
