"""Linear layers with their weights pre-packed for oneDNN, for float32 inference on the CPU.

PyTorch's `F.linear` on the CPU calls MKL's sgemm on a plain row-major weight. oneDNN's matmul
on a weight reordered once into its blocked layout runs the action head's GEMMs (M ~ 84 rows,
K, N in 384..1536) 15-30 % faster on the 2-core machines bench/model.py runs on, and takes the
MLP's tanh-GELU as a fused post-op (a separate `F.gelu` is ~1 ns per element here). Same
function: float32 throughout, only the summation order differs (~1e-6 relative).

Inference only: oneDNN's linear has no autograd kernel, so nothing here records a gradient.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn


@functools.cache
def available() -> bool:
    """Whether this torch build has the oneDNN CPU linear ops (the x86 wheels do)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.ones(2, 3)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 3), packed, None, "none", [], "")
        return bool(torch.allclose(out, torch.full((1, 2), 3.0)))
    except (AttributeError, RuntimeError):
        return False


@dataclass
class PackedLinear:
    """One nn.Linear's weight in oneDNN's layout."""

    packed: torch.Tensor
    bias: torch.Tensor | None

    @classmethod
    def of(cls, linear: nn.Linear, rows_hint: int) -> "PackedLinear":
        """rows_hint: the usual number of input rows; it picks the blocking, any count works."""
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint), bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, in_features) -> (M, out_features)."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def gelu_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """gelu(linear(x), approximate="tanh"), the GELU fused into the GEMM."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "gelu", [], "tanh")
