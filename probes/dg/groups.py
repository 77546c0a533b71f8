"""Groups from attribute columns, and accuracy per group.

A group is one combination of values of some keys (``class`` and attributes), e.g. MEGACOIN's
(class, background colour). :func:`encode_groups` turns per-row value columns into group ids
with one vocabulary for every split, so the same group has the same id in train, val and test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from featkit.errors import FeatkitError

#: Joins ``key=value`` parts of a group's name: ``class=cat|env=water``.
GROUP_SEPARATOR = "|"


@dataclass(frozen=True)
class Groups:
    """Group ids per split (``ids[split][i]`` indexes ``names``) for the ``keys`` they combine."""

    keys: tuple[str, ...]
    names: tuple[str, ...]
    ids: Mapping[str, np.ndarray]

    @property
    def num_groups(self) -> int:
        return len(self.names)

    def counts(self, split: str) -> np.ndarray:
        return np.bincount(self.ids[split], minlength=self.num_groups)


def encode_groups(columns: Mapping[str, Mapping[str, Sequence[str]]], keys: Sequence[str]
                  ) -> Groups:
    """Group ids from value columns: ``columns[split][key]`` lists each row's value of ``key``.
    Groups are named ``key=value|key=value`` and numbered in sorted order of their values over
    all splits."""
    keys = tuple(keys)
    if not keys:
        raise FeatkitError("a grouping needs at least one key (class or an attribute)")
    rows = {}
    for split, by_key in columns.items():
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise FeatkitError(f"{split}: no column for {', '.join(missing)}")
        lengths = {len(by_key[k]) for k in keys}
        if len(lengths) != 1:
            raise FeatkitError(f"{split}: the columns {', '.join(keys)} differ in length")
        rows[split] = list(zip(*(by_key[k] for k in keys)))
    vocabulary = sorted({row for split_rows in rows.values() for row in split_rows})
    index = {row: i for i, row in enumerate(vocabulary)}
    names = tuple(GROUP_SEPARATOR.join(f"{k}={v}" for k, v in zip(keys, row)) for row in vocabulary)
    ids = {split: np.asarray([index[r] for r in split_rows], dtype=np.int64)
           for split, split_rows in rows.items()}
    return Groups(keys, names, ids)


def group_accuracy(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                   num_groups: int) -> np.ndarray:
    """Accuracy of each group (NaN for a group without rows)."""
    predictions, labels, groups = (np.asarray(a) for a in (predictions, labels, groups))
    counts = np.bincount(groups, minlength=num_groups).astype(np.float64)
    correct = np.bincount(groups, weights=(predictions == labels).astype(np.float64),
                          minlength=num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)


def worst_group_accuracy(per_group: np.ndarray) -> float:
    """The lowest accuracy among the groups that have rows (NaN when none has)."""
    per_group = np.asarray(per_group, dtype=np.float64)
    present = per_group[~np.isnan(per_group)]
    return float(present.min()) if present.size else float("nan")


def mean_worst_group(correct: np.ndarray, groups: np.ndarray) -> float:
    """The mean over seeds of the worst group's accuracy, as :func:`group_accuracy` and
    :func:`worst_group_accuracy` give it per seed, of items x seeds 0/1 ``correct`` (one column
    per seed's network) and the items' ``groups``: the DG record's ``worst_group`` as a
    statistic of (resampled) test items."""
    groups = np.asarray(groups, dtype=np.int64)
    correct = np.asarray(correct, dtype=np.float64).reshape(len(groups), -1)
    counts = np.bincount(groups)
    present = counts > 0
    worst = [float((np.bincount(groups, weights=correct[:, seed], minlength=len(counts))
                    [present] / counts[present]).min()) for seed in range(correct.shape[1])]
    return float(np.mean(worst))
