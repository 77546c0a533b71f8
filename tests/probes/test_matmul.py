"""The probe GEMM (oneDNN for batches of rows, ``F.linear`` otherwise) against float64."""

from __future__ import annotations

import pytest
import torch

from probes import _matmul


def _operands(rows, dim=96, classes=17, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=gen, dtype=dtype)
    weight = torch.randn(classes, dim, generator=gen, dtype=dtype)
    return x, weight


@pytest.mark.parametrize("rows", [1, 3, _matmul.ONEDNN_MIN_ROWS, 37, 300])
def test_linear_equals_the_float64_product(rows):
    x, weight = _operands(rows)
    out = _matmul.linear(x, weight, _matmul.pack(weight))
    exact = x.double() @ weight.double().T
    assert out.shape == (rows, weight.shape[0]) and out.dtype == torch.float32
    assert torch.max(torch.abs(out.double() - exact)) <= 1e-5 * exact.abs().max()


def test_transposed_weight_gives_the_input_gradient_product():
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(50, 17, generator=gen)  # logit gradient: N x K
    weight = torch.randn(17, 96, generator=gen)  # K x D
    weight_t = weight.T.contiguous()
    out = _matmul.linear(grad, weight_t, _matmul.pack(weight_t))
    exact = grad.double() @ weight.double()
    assert out.shape == (50, 96)
    assert torch.max(torch.abs(out.double() - exact)) <= 1e-5 * exact.abs().max()


def test_a_shape_mismatch_raises_like_f_linear():
    x, weight = _operands(20)
    with pytest.raises(RuntimeError):
        _matmul.linear(x[:, :-1].contiguous(), weight, _matmul.pack(weight))


def test_a_row_does_not_depend_on_the_rest_of_the_batch():
    x, weight = _operands(64)
    packed = _matmul.pack(weight)
    full = _matmul.linear(x, weight, packed)
    for start, stop in [(0, 4), (5, 13), (20, 64)]:
        part = _matmul.linear(x[start:stop].contiguous(), weight, packed)
        assert torch.allclose(part, full[start:stop], rtol=0, atol=1e-5)


def test_fallbacks_are_exactly_f_linear():
    x, weight = _operands(40, dtype=torch.float64)
    assert _matmul.pack(weight) is None  # oneDNN path is float32 only
    assert torch.equal(_matmul.linear(x, weight, None), torch.nn.functional.linear(x, weight))
    x32, w32 = _operands(40)
    packed = _matmul.pack(w32)
    strided = x32.T.contiguous().T  # same values, not contiguous
    assert torch.equal(_matmul.linear(strided, w32, packed),
                       torch.nn.functional.linear(strided, w32))
    single = x32[:1]
    assert torch.equal(_matmul.linear(single, w32, packed),
                       torch.nn.functional.linear(single, w32))
    batched = x32.reshape(4, 10, -1)  # not 2-D
    assert torch.equal(_matmul.linear(batched, w32, packed),
                       torch.nn.functional.linear(batched, w32))
