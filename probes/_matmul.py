"""``x @ weight.T`` for a fixed weight, through oneDNN on the CPU when that is faster.

PyTorch's CPU ``mm`` calls MKL, which on AMD processors runs its generic AVX2 kernels (Zen 5
here: 85 GFLOP/s on one core); oneDNN, which PyTorch also ships, picks its kernels by the
instruction set and runs AVX-512 there (~2x faster for a CUB-sized probe GEMM). oneDNN has a
higher fixed cost per call, so single rows (a GEMV) stay on ``mm``; from
:data:`ONEDNN_MIN_ROWS` rows on it wins (measured: 4 rows 39 µs vs 60 µs, 256 rows 0.55 ms vs
1.2 ms). oneDNN's result for a row does not depend on how many rows are in the call.

The weight is packed once into oneDNN's blocked layout (:func:`pack`); anything that is not a
contiguous 2-D float32 CPU tensor, or a PyTorch without the oneDNN ops, uses ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Fewest rows for which the oneDNN path is used (1 row: 22 µs on ``mm`` vs 34 µs on oneDNN).
ONEDNN_MIN_ROWS = 4


def pack(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (``K x D``) packed for :func:`linear`, or None where oneDNN cannot be used."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 2:
        return None
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())
    except (AttributeError, RuntimeError, NotImplementedError):
        return None


def linear(x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T`` (no bias, no autograd): oneDNN with ``packed`` for a batch of rows,
    else ``F.linear``."""
    if (
        packed is not None
        and x.dim() == 2
        and x.shape[0] >= ONEDNN_MIN_ROWS
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.is_contiguous()
    ):
        try:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        except (RuntimeError, NotImplementedError):  # no oneDNN kernel here: the plain path decides
            pass
    return F.linear(x, weight)
