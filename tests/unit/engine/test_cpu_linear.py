"""Linear layers through oneDNN: the same numbers and gradients as ``F.linear``, and the fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.engine.lm.cpu_linear import RoutedLinear, linear, onednn_linear_available, route_linears
from training.engine.lm.models import load_model

pytestmark = pytest.mark.skipif(
    not onednn_linear_available(), reason="this torch build has no oneDNN (mkldnn) linear op"
)


def _grads(fn, *tensors):
    out = fn()
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    grads = [t.grad.clone() if t.grad is not None else None for t in tensors]
    for t in tensors:
        t.grad = None
    return out.detach(), grads


@pytest.mark.parametrize("bias", [False, True])
def test_value_and_gradients_equal_f_linear(bias):
    torch.manual_seed(0)
    x = torch.randn(3, 11, 24, requires_grad=True)
    w = torch.randn(40, 24, requires_grad=True)
    b = torch.randn(40, requires_grad=True) if bias else None
    leaves = [t for t in (x, w, b) if t is not None]
    ours, ours_grads = _grads(lambda: linear(x, w, b), *leaves)
    b64 = None if b is None else b.double()
    ref, ref_grads = _grads(lambda: F.linear(x.double(), w.double(), b64), *leaves)
    assert ours.dtype == torch.float32 and ours.shape == (3, 11, 40)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-5)
    for got, want in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


def test_runs_through_onednn_with_strided_input_and_frozen_weight():
    torch.manual_seed(1)
    base = torch.randn(24, 9, requires_grad=True)
    x = base.t()  # [9, 24], not contiguous
    w = torch.randn(16, 24)  # frozen: no weight gradient is computed or returned
    y = linear(x, w)
    assert type(y.grad_fn).__name__ == "OneDnnLinearBackward"
    y.sum().backward()
    torch.testing.assert_close(base.grad, w.sum(0)[:, None].expand(24, 9), rtol=1e-5, atol=1e-5)
    assert w.grad is None


def test_without_a_graph_to_record_it_calls_onednn_directly():
    torch.manual_seed(4)
    x, w = torch.randn(2, 5, 8), torch.randn(3, 8, requires_grad=True)
    with torch.no_grad():
        y = linear(x, w)
    assert y.grad_fn is None and y.shape == (2, 5, 3)
    torch.testing.assert_close(y, F.linear(x, w.detach()), rtol=1e-5, atol=1e-5)
    frozen = linear(x, w.detach())
    assert frozen.grad_fn is None
    torch.testing.assert_close(frozen, y)


def test_falls_back_outside_plain_fp32_cpu():
    torch.manual_seed(2)
    x, w = torch.randn(5, 8), torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16
    assert torch.equal(linear(x.double(), w.double()), F.linear(x.double(), w.double()))
    empty = torch.randn(0, 8, requires_grad=True)
    assert linear(empty, w).shape == (0, 3)


def test_switch_off_by_environment(monkeypatch):
    onednn_linear_available.cache_clear()
    monkeypatch.setenv("PREFSTUDIO_ONEDNN_LINEAR", "0")
    try:
        assert not onednn_linear_available()
        x = torch.randn(4, 8, requires_grad=True)
        assert type(linear(x, torch.randn(3, 8)).grad_fn).__name__ != "OneDnnLinearBackward"
    finally:
        onednn_linear_available.cache_clear()


def test_route_keeps_parameters_ties_and_state_dict():
    plain = load_model("tiny", onednn_linears=False)
    routed = load_model("tiny")
    linears = [m for m in routed.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is RoutedLinear for m in linears)
    assert not any(type(m) is RoutedLinear for m in plain.modules())
    assert route_linears(routed) == 0  # already routed
    assert routed.state_dict().keys() == plain.state_dict().keys()
    if plain.config.tie_word_embeddings:
        assert routed.lm_head.weight is routed.model.embed_tokens.weight


def test_routed_model_trains_like_the_plain_one():
    torch.manual_seed(3)
    ids = torch.randint(0, 100, (2, 17))
    results = []
    for routed in (False, True):
        model = load_model("tiny", onednn_linears=routed).train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
