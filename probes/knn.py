"""Weighted k-nearest-neighbour classifier, the parameter-free probe of DINO/DINOv2.

Features are L2-normalised; each query's k most cosine-similar training samples vote for
their class with weight exp(sim / T) (T = 0.07). The scores returned are those weights
normalised over the k neighbours (DINOv2's softmax; the class ranking is the same as with the
raw exp weights). Neighbour ties go to the lower training index and vote ties to the lower
class id, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from featkit._device import torch_device
from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes._progress import progress_bar
from probes.classification import ClassificationMetrics, score_classification
from probes.defaults import KNN_KS, KNN_PRIMARY_K, KNN_TEMPERATURE


def _normalized(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_neighbors(
    train_features: np.ndarray,
    query_features: np.ndarray,
    k: int,
    *,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and indices (``Q x k``, best first) of each query's k nearest
    training samples; equal similarities are ordered by training index. Memory is bounded by
    computing the similarity matrix in query chunks of at most ~2^26 entries."""
    dev = torch_device(device)
    train = _normalized(train_features, dev)
    queries = _normalized(query_features, dev)
    n_train = train.shape[0]
    if not 1 <= k <= n_train:
        raise FeatkitError(f"k = {k} must lie in [1, {n_train}] (the number of training samples)")
    rows = max(1, min(chunk_size, (1 << 26) // max(n_train, 1)))
    sims_out = np.empty((queries.shape[0], k), dtype=np.float32)
    idx_out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in progress_bar(range(0, queries.shape[0], rows), progress, "kNN"):
        sims = queries[start : start + rows] @ train.T
        values, indices = torch.topk(sims, k, dim=1, sorted=True)
        values, indices = values.cpu().numpy(), indices.cpu().numpy()
        # ties crossing the k-th place: the lower training indices win (exact stable order)
        boundary = torch.as_tensor(values[:, -1:], device=dev)
        crowded = ((sims >= boundary).sum(dim=1).cpu().numpy() > k).nonzero()[0]
        if crowded.size:
            dense = sims[torch.as_tensor(crowded, device=dev)].cpu().numpy()
            order = np.argsort(-dense, axis=1, kind="stable")[:, :k]
            indices[crowded] = order
            values[crowded] = np.take_along_axis(dense, order, axis=1)
        order = np.lexsort((indices, -values), axis=1)
        sims_out[start : start + rows] = np.take_along_axis(values, order, axis=1)
        idx_out[start : start + rows] = np.take_along_axis(indices, order, axis=1)
    return sims_out, idx_out


def knn_votes(
    neighbor_sims: np.ndarray,
    neighbor_labels: np.ndarray,
    k: int,
    num_classes: int,
    temperature: float = KNN_TEMPERATURE,
) -> np.ndarray:
    """Class scores ``Q x K`` from the first ``k`` neighbours: softmax(sim / T) over the k
    neighbours, summed per class."""
    sims = np.asarray(neighbor_sims[:, :k], dtype=np.float64) / temperature
    weights = np.exp(sims - sims.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    votes = np.zeros((sims.shape[0], num_classes), dtype=np.float64)
    np.add.at(votes, (np.arange(sims.shape[0])[:, None], neighbor_labels[:, :k]), weights)
    return votes


@dataclass(frozen=True)
class KnnResult:
    """Per-k test scores; ``metrics()`` gives the primary k's ``top1/top5/mean_per_class``
    plus ``top1_k<k>`` and ``top5_k<k>`` for every k."""

    per_k: dict[int, ClassificationMetrics]
    primary_k: int
    temperature: float
    n_train: int

    @property
    def top1(self) -> float:
        return self.per_k[self.primary_k].top1

    def metrics(self) -> dict[str, float]:
        out = dict(self.per_k[self.primary_k].metrics())
        for k, m in sorted(self.per_k.items()):
            out[f"top1_k{k}"] = m.top1
            out[f"top5_k{k}"] = m.top5
        return out

    def settings(self) -> dict[str, Any]:
        return {
            "ks": sorted(self.per_k),
            "primary_k": self.primary_k,
            "temperature": self.temperature,
            "similarity": "cosine",
            "n_train": self.n_train,
        }


def knn_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    ks: Sequence[int],
    num_classes: int,
    *,
    temperature: float = KNN_TEMPERATURE,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[int, np.ndarray]:
    """Class scores ``Q x num_classes`` for every k in ``ks`` (one neighbour search)."""
    ks = _check_ks(ks)
    if temperature <= 0:
        raise FeatkitError(f"the kNN temperature must be positive; got {temperature}")
    check_finite(train_features, "kNN bank features")
    check_finite(query_features, "kNN query features")
    train_labels = np.asarray(train_labels, dtype=np.int64)
    sims, idx = nearest_neighbors(
        train_features, query_features, ks[-1], chunk_size=chunk_size, device=device,
        progress=progress,
    )
    neighbor_labels = train_labels[idx]
    return {k: knn_votes(sims, neighbor_labels, k, num_classes, temperature) for k in ks}


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise FeatkitError(f"k values must be positive integers; got {list(ks)}")
    return ks


def score_knn(
    scores: dict[int, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    primary_k: int | None = None,
    temperature: float = KNN_TEMPERATURE,
    n_train: int = 0,
) -> KnnResult:
    """Score :func:`knn_scores` output against labels. ``primary_k`` defaults to
    :data:`KNN_PRIMARY_K` if present, else the largest k."""
    ks = sorted(scores)
    if primary_k is not None:
        primary = primary_k
    else:
        primary = KNN_PRIMARY_K if KNN_PRIMARY_K in ks else ks[-1]
    if primary not in ks:
        raise FeatkitError(f"primary k = {primary} is not among the k values {ks}")
    per_k = {k: score_classification(scores[k], labels, class_names) for k in ks}
    return KnnResult(per_k=per_k, primary_k=primary, temperature=temperature, n_train=n_train)


def knn_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    ks: Sequence[int] = KNN_KS,
    primary_k: int | None = None,
    temperature: float = KNN_TEMPERATURE,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> KnnResult:
    """Weighted kNN classification of test features by the train set, for each k in ``ks``.

    ``primary_k`` (default: :data:`KNN_PRIMARY_K` if present, else the largest k) is the k
    whose scores fill the plain ``top1/top5/mean_per_class`` keys. Nothing is tuned, so no
    validation split is used.
    """
    ks = _check_ks(ks)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = (
        len(class_names)
        if class_names is not None
        else int(max(train_labels.max(), test_labels.max()) + 1)
    )
    scores = knn_scores(
        train_features, train_labels, test_features, ks, n_classes, temperature=temperature,
        chunk_size=chunk_size, device=device, progress=progress,
    )
    return score_knn(scores, test_labels, class_names, primary_k=primary_k,
                     temperature=temperature, n_train=len(train_labels))
