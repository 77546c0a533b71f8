"""Classification scores from a score matrix: top-1, top-5, mean per-class accuracy.

Shared by the linear and kNN probes so both count hits the same way. Ties between class scores
go to the lower class index (a stable sort), so results never depend on the sort algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracies as fractions in [0, 1]; ``per_class`` maps class name -> accuracy for every
    class that has at least one evaluated sample (``mean_per_class`` averages those)."""

    top1: float
    top5: float
    mean_per_class: float
    per_class: dict[str, float]
    n_samples: int

    def metrics(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "mean_per_class": self.mean_per_class}


def topk_predictions(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring class ids per row, best first; ties go to the lower class id."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def score_classification(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> ClassificationMetrics:
    """Score an ``N x K`` matrix of class scores (logits, probabilities or votes) against
    integer labels. Top-5 is top-``min(5, K)``."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"scores must be N x K with N = len(labels); got {scores.shape} and {labels.shape}"
        )
    n_classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got [{labels.min()}, {labels.max()}]")
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} score columns")
    if labels.size == 0:
        return ClassificationMetrics(float("nan"), float("nan"), float("nan"), {}, 0)
    top = topk_predictions(scores, 5)
    hit1 = top[:, 0] == labels
    hit5 = (top == labels[:, None]).any(axis=1)
    counts = np.bincount(labels, minlength=n_classes)
    correct = np.bincount(labels, weights=hit1, minlength=n_classes)
    present = np.flatnonzero(counts)
    per_class = {names[c]: float(correct[c] / counts[c]) for c in present}
    return ClassificationMetrics(
        top1=float(hit1.mean()),
        top5=float(hit5.mean()),
        mean_per_class=float(np.mean(correct[present] / counts[present])),
        per_class=per_class,
        n_samples=int(labels.size),
    )
