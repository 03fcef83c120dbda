"""fp32 linear layers on CPU through oneDNN instead of the BLAS behind ``F.linear``.

torch's fp32 ``F.linear``/``mm`` on CPU calls MKL's sgemm, which on AMD processors runs its AVX2 kernels
even where the CPU has AVX-512: on the 2-core Zen 5 machines this project runs on it reaches about
210 GFLOP/s, while oneDNN's matmul (which picks its kernels by CPU feature, not vendor) reaches about
470 GFLOP/s on the same shapes, at the same IEEE fp32 precision.  ``OneDnnLinear`` runs the forward and
both backward products through oneDNN; ``route_linears`` switches a model's
``nn.Linear`` layers to it.  Under autocast, on other devices or dtypes, the layers fall back to
``F.linear``.  ``PREFSTUDIO_ONEDNN_LINEAR=0`` turns the route off (to compare the two).
"""

from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


@cache
def onednn_linear_available() -> bool:
    if os.environ.get("PREFSTUDIO_ONEDNN_LINEAR", "1") == "0":
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def times_transposed(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)`` for 2-D ``a`` ``[M, K]`` and ``b`` ``[N, K]``; either may be a strided view."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def weight_gradient(g: Tensor, x: Tensor, weight: Tensor, has_bias: bool) -> tuple[Tensor, Tensor | None]:
    """``gᵀx`` (and ``g.sum(0)`` when ``has_bias``) for 2-D ``g`` ``[M, N]`` and ``x`` ``[M, K]``."""
    grad_w, grad_b = torch.mkldnn_linear_backward_weights(
        g.contiguous().to_mkldnn(), x.contiguous().to_mkldnn(), weight, has_bias
    )
    return grad_w, grad_b if has_bias else None


def _unflatten(rows: Tensor, x: Tensor) -> Tensor:
    """``[M, N]`` products of the rows of ``x`` back to ``x``'s leading dimensions."""
    return rows.view(*x.shape[:-1], rows.shape[-1])


class OneDnnLinear(torch.autograd.Function):
    """``F.linear`` with its three products computed by oneDNN: y = xWᵀ and ∂x = gW as inner products,
    ∂W = gᵀx (and ∂b) by oneDNN's weight-gradient primitive, which contracts over the rows itself; as an
    inner product it would need gᵀ copied row-major first, a transposing copy that costs a third of the
    product."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        ctx.input_shape = x.shape
        ctx.has_bias = bias is not None
        ctx.save_for_backward(flat, weight)
        return _unflatten(times_transposed(flat, weight, bias), x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        flat, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = times_transposed(g, weight.t()).view(ctx.input_shape)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_w, grad_b = weight_gradient(g, flat, weight, ctx.has_bias)
            grad_w = grad_w if ctx.needs_input_grad[1] else None
            grad_b = grad_b if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``, through oneDNN where the product is a plain fp32 one on CPU."""
    if (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and onednn_linear_available()
    ):
        tracked = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        if not (tracked and torch.is_grad_enabled()):  # reference passes, generation: no graph to record
            return _unflatten(times_transposed(x.reshape(-1, x.shape[-1]), weight, bias), x)
        return OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class RoutedLinear(nn.Linear):
    """An ``nn.Linear`` whose forward is ``linear`` above; same parameters, state dict and repr."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def route_linears(model: nn.Module) -> int:
    """Switch every plain ``nn.Linear`` of ``model`` to ``RoutedLinear`` in place; returns how many.

    The class is swapped rather than the module replaced, so parameters, hooks, tying and any wrapper
    that holds the layer (peft's LoRA layers wrap it as their base layer) stay as they are.
    """
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = RoutedLinear
            count += 1
    return count
