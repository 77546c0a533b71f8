"""Same-object verification of image pairs (TWIN): cosine similarity of the two images'
features, scored by ROC-AUC, accuracy at a threshold chosen on validation pairs, and the
true-accept rate at a false-accept rate (TAR @ FAR = 1e-3 by default).

:func:`mine_pairs` builds pairs from labelled images when no pairs file is given: positives are
two images of one class, negatives each image's most similar image of another class under a
chosen model's features (the hardest negative), one of each per image by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes.binary import accuracy_at, best_threshold, roc_auc, tar_at_far

PAIRS_FAR = 1e-3
PAIRS_PER_IMAGE = 1
PAIRS_SEED = 0
#: Rows of the similarity matrix computed at once when mining negatives.
MINING_BLOCK_ROWS = 1024


def _unit(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``first`` with the same row of ``second``."""
    check_finite(first, "first images' features")
    check_finite(second, "second images' features")
    return np.einsum("ij,ij->i", _unit(first), _unit(second)).astype(np.float64)


@dataclass(frozen=True)
class Pairs:
    """Pairs as row indices into one feature array: ``first[i]``, ``second[i]``, ``same[i]``."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray

    def __len__(self) -> int:
        return len(self.same)


def mine_pairs(labels: np.ndarray, mining_features: np.ndarray, *,
               per_image: int = PAIRS_PER_IMAGE, seed: int = PAIRS_SEED) -> Pairs:
    """Per image, ``per_image`` positives (other images of its class, drawn with ``seed``) and
    its ``per_image`` most similar images of other classes by cosine similarity of
    ``mining_features`` (ties: the lower index). Unordered pairs appear once; images alone in
    their class get no positive."""
    labels = np.asarray(labels, dtype=np.int64)
    if per_image < 1:
        raise FeatkitError(f"pairs per image must be at least 1, got {per_image}")
    if len(mining_features) != len(labels):
        raise FeatkitError(f"{len(mining_features)} mining features for {len(labels)} images")
    check_finite(mining_features, "mining features")
    rng = np.random.default_rng(seed)
    positive_parts = []
    for cls in np.unique(labels):  # a loop over classes; each class's draws are one array op
        members = np.flatnonzero(labels == cls)
        n = members.size
        if n < 2:
            continue
        take = min(per_image, n - 1)
        offsets = np.argsort(rng.random((n, n - 1)), axis=1)[:, :take] + 1
        partners = members[(np.arange(n)[:, None] + offsets) % n]
        positive_parts.append(np.stack([np.repeat(members, take), partners.ravel()], axis=1))
    unit = _unit(mining_features)
    negative_parts = []
    k = min(per_image, len(labels) - 1)
    for start in range(0, len(labels), MINING_BLOCK_ROWS):
        block = slice(start, start + MINING_BLOCK_ROWS)
        similarity = unit[block] @ unit.T
        similarity[labels[block, None] == labels[None, :]] = -np.inf
        hardest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        rows = np.repeat(np.arange(start, start + len(hardest)), k)
        usable = np.isfinite(np.take_along_axis(similarity, hardest, axis=1)).ravel()
        negative_parts.append(np.stack([rows, hardest.ravel()], axis=1)[usable])
    firsts, seconds, same = [], [], []
    for is_same, parts in ((True, positive_parts), (False, negative_parts)):
        pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        pairs = np.unique(np.sort(pairs, axis=1), axis=0)  # each unordered pair once
        firsts.append(pairs[:, 0])
        seconds.append(pairs[:, 1])
        same.append(np.full(len(pairs), is_same))
    return Pairs(np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64),
                 np.concatenate(same))


@dataclass(frozen=True)
class PairResult:
    """Verification scores on the test pairs; the threshold was chosen on the val pairs.
    ``test_correct``: each test pair's 0/1 correctness at that threshold (its mean is
    ``accuracy``)."""

    roc_auc: float
    accuracy: float
    threshold: float
    val_accuracy: float
    tar_at_far: float
    far: float
    far_threshold: float
    achieved_far: float
    counts: dict[str, int]
    warnings: tuple[str, ...]
    test_correct: np.ndarray = field(repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        return {"roc_auc": self.roc_auc, "accuracy": self.accuracy,
                "tar_at_far": self.tar_at_far}

    def settings(self) -> dict[str, Any]:
        return {"score": "cosine similarity", "threshold": self.threshold,
                "threshold_rule": "val accuracy of score > threshold (midpoints of distinct "
                                  "scores; ties: the lower)",
                "val_accuracy": self.val_accuracy, "far": self.far,
                "far_threshold": self.far_threshold, "achieved_far": self.achieved_far}


def pair_verification(val_scores: np.ndarray, val_same: np.ndarray, test_scores: np.ndarray,
                      test_same: np.ndarray, *, far: float = PAIRS_FAR) -> PairResult:
    """Choose the accuracy-maximising threshold on the val pairs, then score the test pairs:
    ROC-AUC, accuracy at that threshold, and TAR at ``far`` (on the test negatives)."""
    if not 0 < far < 1:
        raise FeatkitError(f"the false-accept rate must lie in (0, 1), got {far}")
    val_same, test_same = np.asarray(val_same, bool), np.asarray(test_same, bool)
    for name, same in (("val", val_same), ("test", test_same)):
        if not same.any() or same.all():
            raise FeatkitError(f"the {name} pairs need both same and different pairs "
                               f"(have {int(same.sum())} same, {int((~same).sum())} different)")
    threshold, val_accuracy = best_threshold(val_scores, val_same)
    tar, far_threshold, achieved = tar_at_far(test_scores, test_same, far)
    test_correct = (np.asarray(test_scores, dtype=np.float64) > threshold) == test_same
    warnings = []
    n_neg = int((~test_same).sum())
    if n_neg * far < 1:
        warnings.append(f"{n_neg} different test pairs cannot resolve FAR = {far:g} (that needs "
                        f"at least {int(np.ceil(1 / far))}): the TAR threshold is the highest "
                        "different-pair score, so the achieved FAR is 0")
    return PairResult(
        roc_auc=roc_auc(test_scores, test_same), accuracy=accuracy_at(test_scores, test_same,
                                                                      threshold),
        threshold=threshold, val_accuracy=val_accuracy, tar_at_far=tar, far=far,
        far_threshold=far_threshold, achieved_far=achieved,
        counts={"val_same": int(val_same.sum()), "val_different": int((~val_same).sum()),
                "test_same": int(test_same.sum()), "test_different": n_neg},
        warnings=tuple(warnings), test_correct=test_correct)


def pair_statistics(far: float = PAIRS_FAR) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """The test metrics that are no mean over pairs, as functions of ``(scores, same)`` of
    (resampled) test pairs: ROC-AUC, and TAR at ``far`` with its threshold taken again from the
    pairs' own different-pair scores, as :func:`pair_verification` computes them."""
    def tar(scores: np.ndarray, same: np.ndarray) -> float:
        return tar_at_far(scores, same, far)[0]

    return {"roc_auc": roc_auc, "tar_at_far": tar}
