"""Scores of a binary decision from real-valued scores: ROC-AUC, average precision, the
accuracy-maximising threshold and the true-accept rate at a false-accept rate.

Definitions are scikit-learn's (``roc_auc_score``, ``average_precision_score``): tied scores
count half in ROC-AUC (the Mann-Whitney statistic with average ranks), and average precision
steps through the distinct score values, ``sum_k (R_k - R_{k-1}) P_k``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from featkit.errors import FeatkitError


def _check(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    if scores.shape != positive.shape:
        raise FeatkitError(f"{scores.size} scores for {positive.size} labels")
    if not np.isfinite(scores).all():
        raise FeatkitError("scores contain NaN or infinite values")
    return scores, positive


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (NaN without both classes)."""
    scores, positive = _check(scores, positive)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision over the distinct score thresholds (NaN without a positive)."""
    scores, positive = _check(scores, positive)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """``(threshold, accuracy)``: the cut ``score > threshold`` with the highest accuracy on
    these pairs; thresholds lie midway between neighbouring distinct scores (ties: the lower)."""
    scores, positive = _check(scores, positive)
    values = np.unique(scores)
    cuts = np.r_[values[0] - 1.0, (values[:-1] + values[1:]) / 2, values[-1] + 1.0]
    order = np.argsort(scores, kind="stable")
    sorted_scores, hits = scores[order], positive[order]
    below = np.searchsorted(sorted_scores, cuts, side="right")  # rows with score <= cut
    neg_below = np.cumsum(~hits)[np.maximum(below - 1, 0)] * (below > 0)
    pos_above = int(positive.sum()) - (np.cumsum(hits)[np.maximum(below - 1, 0)] * (below > 0))
    accuracy = (neg_below + pos_above) / scores.size
    best = int(np.argmax(accuracy))
    return float(cuts[best]), float(accuracy[best])


def accuracy_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> float:
    """Accuracy of the decision ``score > threshold``."""
    scores, positive = _check(scores, positive)
    return float(np.mean((scores > threshold) == positive))


def tar_at_far(scores: np.ndarray, positive: np.ndarray, far: float) -> tuple[float, float, float]:
    """``(TAR, threshold, achieved FAR)`` at the false-accept rate ``far``: the threshold is the
    ``(k+1)``-th highest negative score with ``k = floor(far * negatives)``, so at most ``k``
    negatives score above it; TAR is the share of positives above it."""
    scores, positive = _check(scores, positive)
    negatives = np.sort(scores[~positive])[::-1]
    if not negatives.size or not positive.any():
        return float("nan"), float("nan"), float("nan")
    k = int(np.floor(far * negatives.size))
    threshold = float(negatives[min(k, negatives.size - 1)])
    return (float(np.mean(scores[positive] > threshold)), threshold,
            float(np.mean(negatives > threshold)))
