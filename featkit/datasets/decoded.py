"""Images of cached samples, decoded again on demand (for attacks that need the pixels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from featkit.errors import BadImageError, FeatkitError

if TYPE_CHECKING:
    import torch

    from featkit.datasets.base import ImageDataset


class DecodedImages:
    """The images of cached samples, decoded and transformed lazily: ``len()`` and slices give
    normalised ``B x C x H x W`` batches in the cache's row order."""

    def __init__(self, dataset: ImageDataset, sample_ids: Sequence[str],
                 transform: Callable) -> None:
        by_id = {}
        for split in dataset.splits:
            for sample in dataset.samples(split):
                by_id.setdefault(sample.sample_id, sample)
        missing = [s for s in sample_ids if s not in by_id]
        if missing:
            raise FeatkitError(
                f"{len(missing)} cached samples ({', '.join(missing[:3])}) are not in the "
                f"dataset at {dataset.root}; pass the --data-root the features came from"
            )
        self.dataset = dataset
        self.samples = [by_id[s] for s in sample_ids]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        import torch

        return torch.stack([self.transform(self._decode(s)) for s in self.samples[rows]])

    def _decode(self, sample):
        """One image, or a one-line error naming it (the attack cannot skip an image the
        cached features include)."""
        try:
            return self.dataset.load_image(sample)
        except (OSError, ValueError) as err:
            raise BadImageError(
                f"cannot decode {sample.locator} (sample {sample.sample_id}) for the image-space "
                f"attack: {err}; fix or replace the file, or use --space feature"
            ) from None

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)
