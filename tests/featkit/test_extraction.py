"""The model step of the pipeline: CUDA out-of-memory back-off (simulated on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featkit.errors import FeatkitError
from featkit.extraction import _forward


class _OOMAbove:
    """Raises CUDA OOM for batches larger than ``limit``; records the sizes it was called with."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, images, kinds):
        self.calls.append(len(images))
        if len(images) > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")
        return {"visual": images.flatten(1) * 2}


def test_out_of_memory_halves_the_batch_and_remembers_it():
    images = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    extractor, limits = _OOMAbove(limit=2), {}
    out = _forward(extractor, images, ["visual"], "cpu", "fp32", limits)
    np.testing.assert_array_equal(out["visual"], images.numpy() * 2)
    assert limits["batch"] == 2 and extractor.calls == [8, 4, 2, 2, 2, 2]
    extractor.calls.clear()
    _forward(extractor, images, ["visual"], "cpu", "fp32", limits)
    assert extractor.calls == [2, 2, 2, 2]  # later batches start at the remembered size


def test_out_of_memory_on_one_image_is_a_clear_error():
    with pytest.raises(FeatkitError, match="single image"):
        _forward(_OOMAbove(limit=0), torch.zeros(4, 3), ["visual"], "cpu", "fp32", {})
