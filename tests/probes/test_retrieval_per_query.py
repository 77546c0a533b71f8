"""Retrieval's per-query values: each metric's mean over the scored queries is the reported
metric exactly, and each query's value is the naive ranking's (ties pessimistic)."""

from __future__ import annotations

import numpy as np
import pytest

from probes.retrieval import METRIC_KEYS, RECALL_KS, retrieval_map


def naive_per_query(query, labels, gallery=None, gallery_labels=None, metric="euclidean"):
    """One full sort per query in float64 (score descending, irrelevant first among ties),
    self removed by index; None for queries without a relevant item."""
    loo = gallery is None
    q = np.asarray(query, dtype=np.float64)
    g = q if loo else np.asarray(gallery, dtype=np.float64)
    g_labels = labels if loo else gallery_labels
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = []
    for i in range(len(q)):
        scores = q[i] @ g.T if metric == "cosine" else -((g - q[i]) ** 2).sum(axis=1)
        items = [(scores[j], g_labels[j] == labels[i]) for j in range(len(g)) if not (loo and j == i)]
        relevance = [rel for _, rel in sorted(items, key=lambda t: (-t[0], t[1]))]
        n_rel = sum(relevance)
        if n_rel == 0:
            out.append(None)
            continue
        hits, ap, ap_r, hits_r = 0, 0.0, 0.0, 0
        for k, rel in enumerate(relevance, start=1):
            if rel:
                hits += 1
                ap += hits / k
                if k <= n_rel:
                    ap_r, hits_r = ap_r + hits / k, hits_r + 1
        first = relevance.index(True) + 1
        out.append([ap / n_rel, ap_r / n_rel, hits_r / n_rel, first == 1,
                    *(first <= k for k in RECALL_KS)])
    return out


def _cases():
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=(60, 3)).astype(np.float32)  # many exact duplicates and ties
    labels = rng.integers(0, 4, 60)
    labels[-1] = 9  # a lone class: excluded in leave-one-out
    gallery = rng.integers(-2, 3, size=(80, 3)).astype(np.float32)
    gallery_labels = rng.integers(0, 5, 80)
    return {"leave-one-out": (x, labels, None, None),
            "gallery": (x, labels, gallery, gallery_labels)}


@pytest.mark.parametrize("case", ["leave-one-out", "gallery"])
def test_per_query_means_are_the_metrics_exactly_and_match_the_naive_ranking(case):
    query, labels, gallery, gallery_labels = _cases()[case]
    result = retrieval_map(query, labels, gallery, gallery_labels, metric="euclidean",
                           progress=False)
    per_query = result.per_query()
    assert list(per_query) == list(METRIC_KEYS)
    metrics = result.metrics()
    for key, values in per_query.items():
        assert values.shape == (result.n_queries,)
        assert float(values.mean()) == metrics[key], key  # bit for bit
    assert per_query["P@1"].dtype == bool and per_query["mAP"].dtype == np.float64

    naive = naive_per_query(query, labels, gallery, gallery_labels)
    scored = [i for i, v in enumerate(naive) if v is not None]
    np.testing.assert_array_equal(result.scored, scored)
    assert result.n_excluded == len(naive) - len(scored)
    want = np.asarray([naive[i] for i in scored], dtype=np.float64)
    for column, key in enumerate(METRIC_KEYS):
        np.testing.assert_allclose(per_query[key].astype(np.float64), want[:, column],
                                   rtol=0, atol=1e-12, err_msg=key)
    np.testing.assert_array_equal(per_query["mAP"], result.per_query_ap[result.scored])
