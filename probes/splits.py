"""The one stratified validation splitter: every dataset's carved ``val`` split and every probe
that holds out validation data from a train split draw it here, from the same random stream.

Each class with at least two samples gives ``max(1, round(fraction * n_c))`` of its samples to
validation (never all of them); single-sample classes stay in train. The samples of class ``c``
are ordered by ``keys`` (their position when no keys are given) and permuted by
``numpy.random.default_rng([seed, c])``, so a class's draw depends on neither the other classes
nor, with keys such as sample ids, the order the samples come in. Cache keys depend on the
datasets' val splits, so this stream must never change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from featkit.errors import FeatkitError

#: Share of each class carved from train into validation.
VAL_FRACTION = 0.1
#: Seed of the carve (with the class id: one stream per class).
VAL_SEED = 0


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fraction: float = VAL_FRACTION,
    seed: int = VAL_SEED,
    *,
    keys: Sequence[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: sorted int64 positions into ``labels``, stratified and seeded.

    ``labels`` are non-negative class ids. ``keys`` (one sortable value per sample, e.g. sample
    ids) order each class's samples before the seeded permutation, which makes the split
    independent of the input order; without them the positions are the order.
    """
    if not 0.0 < fraction < 1.0:
        raise FeatkitError(f"validation fraction must lie in (0, 1), got {fraction}")
    if int(seed) != seed or seed < 0:
        raise FeatkitError(f"the validation seed must be a non-negative integer, got {seed}")
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise FeatkitError(f"labels must be a 1-D array of class ids, got shape {y.shape} and "
                           f"dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise FeatkitError(f"class ids must be non-negative, got {y.min()}")
    if keys is None:
        order = np.arange(len(y), dtype=np.int64)
    else:
        if len(keys) != len(y):
            raise FeatkitError(f"{len(keys)} keys for {len(y)} labels")
        order = np.asarray(sorted(range(len(y)), key=keys.__getitem__), dtype=np.int64)
    by_class = order[np.argsort(y[order], kind="stable")]  # each class's samples in key order
    classes, starts, counts = np.unique(y[by_class], return_index=True, return_counts=True)
    val_parts = []
    for cls, start, count in zip(classes.tolist(), starts.tolist(), counts.tolist()):
        if count < 2:
            continue
        take = min(max(1, int(round(fraction * count))), count - 1)
        rng = np.random.default_rng([int(seed), cls])
        val_parts.append(by_class[start + rng.permutation(count)[:take]])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx
