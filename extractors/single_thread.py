"""Run an image transform with one torch thread.

A validation transform ends in small tensor ops (to-tensor, normalise on 3x224x224) that each open
an OpenMP parallel region. Decoding in the main process (``--num-workers 0``, the default on two
cores), with the model's threads competing for the same cores, those regions cost far more than
the work: measured here 165-280 ms per image with 2 threads against 10-23 ms with one, next to a
ViT-B/32 forward of ~700 ms. DataLoader workers already run with one thread, so there it changes
nothing. The outputs are the same either way (element-wise ops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class SingleThreadTransform:
    """Wraps ``transform`` so it runs with ``torch.set_num_threads(1)``, restoring the count after."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        import torch

        threads = torch.get_num_threads()
        if threads == 1:
            return self.transform(image)
        torch.set_num_threads(1)
        try:
            return self.transform(image)
        finally:
            torch.set_num_threads(threads)

    def __repr__(self) -> str:
        return f"SingleThreadTransform({self.transform!r})"
