"""Weighted kNN probe against a naive per-query loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.knn import knn_probe, knn_votes, nearest_neighbors


def naive_knn_rankings(train, train_labels, queries, k, temperature, n_classes):
    """Per query: float64 cosine similarities, neighbours sorted by (-sim, index), exp(sim/T)
    votes, classes sorted by (-votes, class id). Returns (rankings, normalised votes)."""
    rankings, vote_rows = [], []
    train_unit = [np.asarray(t, dtype=np.float64) / np.linalg.norm(t) for t in train]
    for q in queries:
        q = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
        sims = [float(np.dot(q, t)) for t in train_unit]
        neighbours = sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:k]
        votes = [0.0] * n_classes
        for j in neighbours:
            votes[train_labels[j]] += math.exp(sims[j] / temperature)
        rankings.append(sorted(range(n_classes), key=lambda c: (-votes[c], c)))
        total = sum(votes)
        vote_rows.append([v / total for v in votes])
    return np.array(rankings), np.array(vote_rows)


def clustered(rng, sizes, n_classes, dim, spread):
    """Train and test splits drawn around the same class centres."""
    centres = rng.standard_normal((n_classes, dim))
    splits = []
    for n in sizes:
        labels = rng.integers(0, n_classes, n)
        noise = spread * rng.standard_normal((n, dim))
        splits.append(((centres[labels] + noise).astype(np.float32), labels))
    return splits


@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_knn_matches_naive_loop(k):
    rng = np.random.default_rng(k)
    n_classes = 8
    (train, train_labels), (test, test_labels) = clustered(rng, (150, 40), n_classes, 16, 1.5)
    ranking, votes = naive_knn_rankings(train, train_labels, test, k, 0.07, n_classes)
    result = knn_probe(train, train_labels, test, test_labels, ks=[k], progress=False)
    m = result.per_k[k]
    assert m.top1 == pytest.approx(np.mean(ranking[:, 0] == test_labels))
    assert m.top5 == pytest.approx(np.mean((ranking[:, :5] == test_labels[:, None]).any(1)))
    assert 0.2 < m.top1 < 1.0  # the data is neither trivial nor hopeless
    sims, idx = nearest_neighbors(train, test, k, device="cpu")
    ours = knn_votes(sims, train_labels[idx], k, n_classes, 0.07)
    np.testing.assert_allclose(ours, votes, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-ours, axis=1, kind="stable")[:, :5], ranking[:, :5])


def test_knn_ties_go_to_lower_train_index_then_lower_class():
    dim = 4
    basis = np.eye(dim, dtype=np.float32)
    # three identical training vectors with labels 2, 1, 0 (exact similarity ties), then others
    train = np.stack([basis[0], basis[0], basis[0], basis[1], basis[2]])
    train_labels = np.array([2, 1, 0, 3, 3])
    query = np.array([[1.0, 0.5, 0.25, 0.0]], dtype=np.float32)
    for k, expected_top1 in [(1, 2), (2, 1), (3, 0)]:
        result = knn_probe(
            train, train_labels, query, np.array([expected_top1]), ks=[k], progress=False
        )
        assert result.per_k[k].top1 == 1.0, k
        ranking, _ = naive_knn_rankings(train, train_labels, query, k, 0.07, 4)
        assert ranking[0, 0] == expected_top1
    _, idx = nearest_neighbors(train, query, 2, device="cpu")
    assert idx.tolist() == [[0, 1]]


def test_knn_chunking_and_metrics_shape():
    rng = np.random.default_rng(0)
    (train, train_labels), (test, test_labels) = clustered(rng, (120, 33), 6, 8, 1.0)
    whole = knn_probe(train, train_labels, test, test_labels, progress=False)
    chunked = knn_probe(train, train_labels, test, test_labels, chunk_size=5, progress=False)
    assert whole.metrics() == chunked.metrics()
    metrics = whole.metrics()
    assert set(metrics) == {
        "top1", "top5", "mean_per_class", "top1_k10", "top5_k10", "top1_k20", "top5_k20"
    }
    assert metrics["top1"] == metrics["top1_k20"]
    assert whole.settings()["ks"] == [10, 20] and whole.settings()["temperature"] == 0.07


def test_knn_rejects_bad_k():
    x = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(FeatkitError, match="must lie in"):
        knn_probe(x, np.array([0, 1, 1]), x, np.array([0, 1, 1]), ks=[5], progress=False)
    with pytest.raises(FeatkitError, match="positive"):
        knn_probe(x, np.array([0, 1, 1]), x, np.array([0, 1, 1]), ks=[0], progress=False)
