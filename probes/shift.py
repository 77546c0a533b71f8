"""Accuracy on a shifted test set whose classes stand for some of the reference classes.

The protocol is imagenet-testbed's: a classifier over the reference classes (ImageNet's 1,000)
is scored on a shifted set (ImageNet-R, ObjectNet, ...) with its scores restricted to the
reference classes the set covers (:attr:`ClassSubset.columns`), and its accuracy is compared
with the accuracy on the reference test split restricted to the same classes, so the pair is
comparable:

- on the shifted set, the prediction is the best-scoring column; it is correct when that column
  is one of the classes the item's class stands for (ObjectNet's "alarm clock" is correct as
  analog clock or digital clock);
- on the reference split, only the items of those classes count, and the prediction (the best
  of the same columns) must be the item's own class.

Scores are ``N x len(columns)`` (columns in :attr:`ClassSubset.columns` order), so callers
compute only the columns a set needs. Ties go to the lower reference class id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from featkit.errors import FeatkitError


@dataclass(frozen=True)
class ClassSubset:
    """``groups[k]``: the reference class ids class ``k`` of the shifted set stands for
    (disjoint across classes; empty when none can be scored, see :meth:`restricted`);
    ``n_reference``: the number of reference classes."""

    groups: tuple[tuple[int, ...], ...]
    n_reference: int

    def __post_init__(self) -> None:
        seen: dict[int, int] = {}
        for k, group in enumerate(self.groups):
            for c in group:
                if not 0 <= c < self.n_reference:
                    raise FeatkitError(f"reference class id {c} outside 0..{self.n_reference - 1}")
                if c in seen and seen[c] != k:
                    raise FeatkitError(f"reference class {c} stands for two classes of the "
                                       f"shifted set ({seen[c]} and {k})")
                seen[c] = k

    @classmethod
    def from_names(cls, shifted: Sequence[str], reference: Sequence[str],
                   mapping: Mapping[str, Sequence[str]] | None = None) -> ClassSubset:
        """Groups by name: each shifted class stands for ``mapping[name]`` (reference class
        names), or for the reference class of the same name."""
        index = {name: i for i, name in enumerate(reference)}
        groups = []
        for name in shifted:
            names = list(mapping[name]) if mapping is not None and name in mapping else [name]
            missing = [n for n in names if n not in index]
            if missing:
                raise FeatkitError(f"class {name!r} of the shifted set stands for "
                                   f"{', '.join(missing)}, not among the reference's "
                                   f"{len(reference)} classes")
            groups.append(tuple(sorted(index[n] for n in names)))
        return cls(tuple(groups), len(reference))

    def restricted(self, known: np.ndarray) -> ClassSubset:
        """The same classes, each standing only for its reference classes in ``known`` (those
        a classifier can score); a class left with none can never be predicted."""
        keep = set(np.asarray(known, dtype=np.int64).tolist())
        return ClassSubset(tuple(tuple(c for c in g if c in keep) for g in self.groups),
                           self.n_reference)

    @property
    def columns(self) -> np.ndarray:
        """The reference class ids the set covers, sorted: the score columns it needs."""
        ids = [c for g in self.groups for c in g]
        return np.unique(np.asarray(ids, dtype=np.int64))

    @property
    def complete(self) -> bool:
        """Every reference class is covered, one per shifted class (no masking at all)."""
        return len(self.groups) == self.n_reference and all(
            g == (k,) for k, g in enumerate(self.groups))

    def column_groups(self) -> np.ndarray:
        """For each column, the shifted class it belongs to."""
        owner = np.empty(self.n_reference, dtype=np.int64)
        for k, group in enumerate(self.groups):
            owner[list(group)] = k
        return owner[self.columns]

    def reference_items(self, reference_labels: np.ndarray) -> np.ndarray:
        """Indices of the reference items whose class the set covers."""
        return np.flatnonzero(np.isin(np.asarray(reference_labels), self.columns))


@dataclass(frozen=True)
class MaskedAccuracy:
    """Top-1 over the masked columns; ``correct`` per item, ``predicted`` the reference class
    id chosen for each item."""

    top1: float
    correct: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.correct.shape[0])


def _predict(scores: np.ndarray, subset: ClassSubset) -> np.ndarray:
    scores = np.asarray(scores)
    columns = subset.columns
    if columns.size == 0:
        raise FeatkitError("the shifted set covers none of the classes the classifier scores")
    if scores.ndim != 2 or scores.shape[1] != columns.shape[0]:
        raise FeatkitError(f"scores must be N x {columns.shape[0]} (the subset's columns), got "
                           f"{scores.shape}")
    return np.argmax(scores, axis=1)


def _accuracy(correct: np.ndarray, predicted: np.ndarray) -> MaskedAccuracy:
    top1 = float(correct.mean()) if correct.size else float("nan")
    return MaskedAccuracy(top1, correct, predicted)


def shifted_accuracy(scores: np.ndarray, labels: np.ndarray, subset: ClassSubset
                     ) -> MaskedAccuracy:
    """Accuracy on the shifted set: ``labels`` are its class ids (into ``subset.groups``); an
    item is correct when its best column belongs to its class."""
    labels = np.asarray(labels, dtype=np.int64)
    best = _predict(scores, subset)
    if labels.shape != best.shape:
        raise FeatkitError(f"{labels.shape[0]} labels for {best.shape[0]} rows of scores")
    if labels.size and (labels.min() < 0 or labels.max() >= len(subset.groups)):
        raise FeatkitError(f"labels must lie in 0..{len(subset.groups) - 1}")
    correct = subset.column_groups()[best] == labels
    return _accuracy(correct, subset.columns[best])


def reference_accuracy(scores: np.ndarray, labels: np.ndarray, subset: ClassSubset
                       ) -> MaskedAccuracy:
    """Accuracy on the reference items of the covered classes (``scores`` and ``labels`` of
    those items only, see :meth:`ClassSubset.reference_items`): correct when the best column is
    the item's own reference class."""
    labels = np.asarray(labels, dtype=np.int64)
    best = _predict(scores, subset)
    if labels.shape != best.shape:
        raise FeatkitError(f"{labels.shape[0]} labels for {best.shape[0]} rows of scores")
    if not np.isin(labels, subset.columns).all():
        raise FeatkitError("reference items of classes the shifted set does not cover; select "
                           "them with ClassSubset.reference_items")
    predicted = subset.columns[best]
    return _accuracy(predicted == labels, predicted)
