"""Retrieval metrics against hand-computed cases, a naive ranking, scikit-learn and
pytorch-metric-learning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.retrieval import METRIC_KEYS, TIE_RULE_TEXT, retrieval_map


def naive_retrieval(query, query_labels, gallery=None, gallery_labels=None, metric="cosine"):
    """Python-loop reference: float64 scores, one full sort per query, ties broken pessimistically
    (sort key: score descending, then irrelevant before relevant), self removed by index."""
    loo = gallery is None
    q = np.asarray(query, dtype=np.float64)
    g = q if loo else np.asarray(gallery, dtype=np.float64)
    g_labels = query_labels if loo else gallery_labels
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    per_query = []
    for i in range(len(q)):
        items = []
        for j in range(len(g)):
            if loo and j == i:
                continue
            if metric == "cosine":
                score = float(np.dot(q[i], g[j]))
            else:
                score = -float(np.sum((q[i] - g[j]) ** 2))
            items.append((score, g_labels[j] == query_labels[i]))
        relevance = [rel for _, rel in sorted(items, key=lambda t: (-t[0], t[1]))]
        n_rel = sum(relevance)
        if n_rel == 0:
            per_query.append(None)
            continue
        hits, ap, ap_at_r, hits_at_r = 0, 0.0, 0.0, 0
        for k, rel in enumerate(relevance, start=1):
            if rel:
                hits += 1
                ap += hits / k
                if k <= n_rel:
                    ap_at_r += hits / k
                    hits_at_r += 1
        first = relevance.index(True) + 1
        per_query.append(
            {
                "mAP": ap / n_rel,
                "mAP@R": ap_at_r / n_rel,
                "R-precision": hits_at_r / n_rel,
                "P@1": float(first == 1),
                "R@1": float(first <= 1),
                "R@5": float(first <= 5),
                "R@10": float(first <= 10),
            }
        )
    scored = [m for m in per_query if m is not None]
    metrics = {key: float(np.mean([m[key] for m in scored])) for key in METRIC_KEYS}
    per_class = {}
    for label in sorted(set(np.asarray(query_labels).tolist())):
        aps = [m["mAP"] for m, y in zip(per_query, query_labels) if m is not None and y == label]
        if aps:
            per_class[label] = float(np.mean(aps))
    return metrics, per_class, len(per_query) - len(scored)


def assert_metrics_close(result, expected, atol=1e-6):
    got = result.metrics()
    assert list(got) == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=atol), key


def sparse_sign_vectors(rng, n, dim, nonzero=4, vocab=6):
    """Vectors with 4 entries of ±1 drawn from a few patterns: after L2 normalisation every entry
    is ±0.5 or 0, so cosine scores are exact multiples of 1/4 and ties are exact."""
    patterns = np.zeros((vocab, dim), dtype=np.float32)
    for p in patterns:
        p[rng.choice(dim, nonzero, replace=False)] = rng.choice([-1.0, 1.0], nonzero)
    return patterns[rng.integers(0, vocab, n)]


# ---------------------------------------------------------------- hand-computed cases


def test_hand_computed_ranking_euclidean():
    # Distances from the query 0: 1 (relevant), 2, 3 (relevant), 4, 5.
    gallery = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    result = retrieval_map(
        np.zeros((1, 1)), [7], gallery, [7, 1, 7, 1, 1], metric="euclidean", progress=False
    )
    assert_metrics_close(
        result,
        {"mAP": (1 + 2 / 3) / 2, "mAP@R": 1 / 2, "R-precision": 1 / 2, "P@1": 1, "R@1": 1, "R@5": 1, "R@10": 1},
    )
    assert result.n_queries == 1 and result.n_excluded == 0 and result.n_gallery == 5
    assert result.per_class_ap == {7: pytest.approx(5 / 6)}


def test_relevant_item_tied_with_irrelevant_ranks_after_it():
    # One relevant and one irrelevant item, both at distance 1: the irrelevant one ranks first.
    result = retrieval_map(
        np.zeros((1, 1)), [0], np.array([[1.0], [-1.0]]), [0, 1], metric="euclidean", progress=False
    )
    assert_metrics_close(
        result, {"mAP": 1 / 2, "mAP@R": 0.0, "R-precision": 0.0, "P@1": 0, "R@1": 0, "R@5": 1, "R@10": 1}
    )
    assert "pessimistic" in TIE_RULE_TEXT


def test_two_relevant_tied_with_one_irrelevant():
    # Three items at distance 1 (two relevant), one relevant item at distance 2:
    # ranking irrelevant, relevant, relevant, relevant -> AP = (1/2 + 2/3 + 3/4) / 3.
    gallery = np.array([[1.0], [-1.0], [1.0], [2.0]])
    result = retrieval_map(
        np.zeros((1, 1)), [0], gallery, [0, 0, 1, 0], metric="euclidean", progress=False
    )
    ap = (1 / 2 + 2 / 3 + 3 / 4) / 3
    assert_metrics_close(
        result,
        {"mAP": ap, "mAP@R": (1 / 2 + 2 / 3) / 3, "R-precision": 2 / 3, "P@1": 0, "R@1": 0, "R@5": 1, "R@10": 1},
    )


def test_duplicates_leave_one_out_removes_query_by_index():
    # Items 0, 1, 2 are the same vector; labels 0, 0, 1, 1.
    # q0: item 1 (relevant) ties with item 2 (irrelevant) -> rank 2, AP 1/2; q1 likewise.
    # q2: items 0, 1 (irrelevant) tie with nothing relevant, item 3 (relevant) is orthogonal
    #     -> rank 3, AP 1/3. Removing the top-ranked position instead of q2 itself would drop
    #     item 0 and count q2's own copy as a relevant hit.
    # q3: items 0, 1, 2 all score 0, item 2 relevant -> rank 3, AP 1/3.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    result = retrieval_map(x, [0, 0, 1, 1], progress=False)
    np.testing.assert_allclose(result.per_query_ap, [1 / 2, 1 / 2, 1 / 3, 1 / 3])
    assert result.map == pytest.approx(5 / 12)
    assert result.precision_at_1 == 0.0
    assert result.recall_at_5 == 1.0
    assert result.per_class_ap == {0: pytest.approx(0.5), 1: pytest.approx(1 / 3)}
    assert result.leave_one_out


def test_query_without_relevant_item_is_excluded_and_counted():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    labels = np.repeat(np.arange(5), 6)
    full = retrieval_map(x, labels, progress=False)
    lone = np.vstack([x, rng.standard_normal((1, 5)).astype(np.float32)])
    with_lone = retrieval_map(lone, np.append(labels, 99), progress=False)
    assert with_lone.n_excluded == 1 and with_lone.n_queries == 30
    assert full.n_excluded == 0
    assert math.isnan(with_lone.per_query_ap[-1])
    assert 99 not in with_lone.per_class_ap
    expected, _, n_excluded = naive_retrieval(lone, np.append(labels, 99))
    assert n_excluded == 1
    assert_metrics_close(with_lone, expected)

    # Explicit gallery: the query whose label the gallery lacks is excluded.
    result = retrieval_map(x[:3], [0, 1, 42], x[3:], labels[3:], progress=False)
    assert result.n_excluded == 1 and result.n_queries == 2


def test_all_queries_without_relevant_items_is_an_error():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(FeatkitError, match="no query has a relevant"):
        retrieval_map(x, [0, 1, 2], progress=False)


# ---------------------------------------------------------------- naive reference with ties


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_with_many_ties_euclidean(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(70, 3)).astype(np.float32)  # many exact duplicates and ties
    labels = rng.integers(0, 4, 70)
    result = retrieval_map(x, labels, metric="euclidean", progress=False)
    expected, per_class, n_excluded = naive_retrieval(x, labels, metric="euclidean")
    assert_metrics_close(result, expected)
    assert result.per_class_ap == pytest.approx(per_class)
    assert result.n_excluded == n_excluded

    gallery = rng.integers(-2, 3, size=(90, 3)).astype(np.float32)
    gallery_labels = rng.integers(0, 5, 90)
    result = retrieval_map(x, labels, gallery, gallery_labels, metric="euclidean", progress=False)
    expected, per_class, n_excluded = naive_retrieval(x, labels, gallery, gallery_labels, "euclidean")
    assert_metrics_close(result, expected)
    assert result.per_class_ap == pytest.approx(per_class)


def test_matches_naive_with_many_ties_cosine():
    rng = np.random.default_rng(5)
    x = sparse_sign_vectors(rng, 80, dim=8)
    labels = rng.integers(0, 3, 80)
    result = retrieval_map(x, labels, progress=False)
    expected, per_class, _ = naive_retrieval(x, labels)
    assert_metrics_close(result, expected)
    assert result.per_class_ap == pytest.approx(per_class)


def test_matches_naive_on_random_data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    labels = rng.integers(0, 5, 60)
    for metric in ("cosine", "euclidean"):
        expected, per_class, _ = naive_retrieval(x, labels, metric=metric)
        result = retrieval_map(x, labels, metric=metric, progress=False)
        assert_metrics_close(result, expected)
        assert result.per_class_ap == pytest.approx(per_class)


# ---------------------------------------------------------------- independent libraries


def clustered(rng, n, dim, n_classes, spread=1.5):
    centres = rng.standard_normal((n_classes, dim))
    labels = rng.integers(0, n_classes, n)
    x = centres[labels] + spread * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


def test_matches_sklearn_average_precision_on_tie_free_data():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    x, labels = clustered(rng, 120, 16, 6)
    result = retrieval_map(x, labels, progress=False)

    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    scores = xn @ xn.T
    aps = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i  # the query removed by index
        relevant = labels[keep] == labels[i]
        assert len(np.unique(scores[i, keep])) == keep.sum()  # tie-free
        if relevant.any():
            aps.append(average_precision_score(relevant, scores[i, keep]))
    assert result.map == pytest.approx(np.mean(aps), abs=1e-6)


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_matches_pytorch_metric_learning(leave_one_out):
    torch = pytest.importorskip("torch")
    faiss = pytest.importorskip("faiss")
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    rng = np.random.default_rng(7)
    x, labels = clustered(rng, 300, 16, 10)
    calculator = AccuracyCalculator(
        include=("mean_average_precision", "mean_average_precision_at_r", "r_precision", "precision_at_1"),
        k=None,
        device=torch.device("cpu"),
        knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP),
    )
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    if leave_one_out:
        result = retrieval_map(x, labels, progress=False)
        reference = calculator.get_accuracy(xn, labels)  # reference = query, self excluded
    else:
        query, gallery = xn[:100], xn[100:]
        result = retrieval_map(x[:100], labels[:100], x[100:], labels[100:], progress=False)
        reference = calculator.get_accuracy(query, labels[:100], gallery, labels[100:])
    got = result.metrics()
    assert got["mAP"] == pytest.approx(reference["mean_average_precision"], abs=1e-6)
    assert got["mAP@R"] == pytest.approx(reference["mean_average_precision_at_r"], abs=1e-6)
    assert got["R-precision"] == pytest.approx(reference["r_precision"], abs=1e-6)
    assert got["P@1"] == pytest.approx(reference["precision_at_1"], abs=1e-6)
    assert 0.2 < got["mAP"] < 0.95  # the data is neither trivial nor random


# ---------------------------------------------------------------- modes and chunking


def test_leave_one_out_equals_explicit_gallery_without_the_query():
    rng = np.random.default_rng(4)
    x = rng.integers(-1, 2, size=(40, 4)).astype(np.float32)  # with ties and duplicates
    labels = rng.integers(0, 3, 40)
    loo = retrieval_map(x, labels, metric="euclidean", progress=False)
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        if math.isnan(loo.per_query_ap[i]):
            with pytest.raises(FeatkitError, match="no query has a relevant"):
                retrieval_map(x[i : i + 1], labels[i : i + 1], x[rest], labels[rest], progress=False)
            continue
        single = retrieval_map(
            x[i : i + 1], labels[i : i + 1], x[rest], labels[rest], metric="euclidean", progress=False
        )
        assert single.per_query_ap[0] == pytest.approx(loo.per_query_ap[i], abs=1e-12)


def test_explicit_gallery_identical_to_query_keeps_the_query():
    # An explicit gallery is never filtered: each query's own copy ranks first and counts as
    # relevant; its partner ties at score 0 with the two irrelevant items and ranks 4th.
    x = np.eye(4, dtype=np.float32)
    result = retrieval_map(x, [0, 0, 1, 1], x, [0, 0, 1, 1], progress=False)
    assert result.map == pytest.approx((1 + 2 / 4) / 2)
    assert result.precision_at_1 == 1.0
    assert not result.leave_one_out


def test_chunk_size_follows_the_memory_budget():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1200, 8)).astype(np.float32)  # no duplicate rows
    labels = rng.integers(0, 6, 1200)
    assert retrieval_map(x, labels, progress=False).chunk_rows == 1536  # one chunk of 3 tiles
    # The accounting documented in retrieval_map: copies, padded tile, per-item arrays, row buffers.
    fixed = x.nbytes + 512 * 8 * 4 + 64 * (1200 + 1200) + 10 * 1200
    row_bytes = 4 * 1200
    assert retrieval_map(x, labels, max_memory=fixed + 1100 * row_bytes, progress=False).chunk_rows == 1024
    assert retrieval_map(x, labels, max_memory=fixed + 700 * row_bytes, progress=False).chunk_rows == 512
    with pytest.raises(FeatkitError, match="too small"):
        retrieval_map(x, labels, max_memory=fixed + 400 * row_bytes, progress=False)
    assert retrieval_map(x, labels, chunk_rows=7, progress=False).chunk_rows == 512  # whole tiles


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunked_equals_unchunked(metric):
    # Tie-free random rows, exactly representable rows with ties and duplicates, and quantised
    # rows whose equal true scores are not exactly representable (like raw pixels): the float32
    # scores, and so the ties and every metric, must not depend on the chunk size.
    rng = np.random.default_rng(9)
    exact = sparse_sign_vectors(rng, 300, 8) if metric == "cosine" else rng.integers(-1, 2, (300, 8))
    quantised = rng.integers(0, 4, (500, 8)) / 3.0 + 0.1
    x = np.vstack([rng.standard_normal((300, 8)), exact, quantised]).astype(np.float32)
    labels = rng.integers(0, 6, len(x))
    whole = retrieval_map(x, labels, metric=metric, progress=False)
    small = retrieval_map(x, labels, metric=metric, max_memory="5MB", progress=False)
    assert whole.chunk_rows == 1536 and small.chunk_rows == 512
    for result in (small, retrieval_map(x, labels, metric=metric, chunk_rows=1024, progress=False)):
        assert result.metrics() == whole.metrics()
        np.testing.assert_array_equal(result.per_query_ap, whole.per_query_ap)
        assert result.per_class_ap == whole.per_class_ap
    gallery = retrieval_map(x[:700], labels[:700], x[300:], labels[300:], metric=metric, progress=False)
    for chunk_rows in (512, None):
        chunked = retrieval_map(
            x[:700], labels[:700], x[300:], labels[300:], metric=metric, chunk_rows=chunk_rows, max_memory="4MB", progress=False
        )
        assert chunked.chunk_rows == 512
        np.testing.assert_array_equal(chunked.per_query_ap, gallery.per_query_ap)


def test_duplicate_gallery_vectors_tie_whatever_their_position():
    # Many copies of a few random (not exactly representable) vectors at scattered positions:
    # a float32 GEMM can give copies scores one ulp apart; they must tie all the same.
    rng = np.random.default_rng(12)
    base = rng.standard_normal((5, 37)).astype(np.float32)
    pick = rng.integers(0, 5, 150)
    x = base[pick]
    labels = rng.integers(0, 3, 150)
    for metric in ("cosine", "euclidean"):
        result = retrieval_map(x, labels, metric=metric, progress=False)
        expected, per_class, _ = naive_retrieval(x, labels, metric=metric)
        assert_metrics_close(result, expected, atol=1e-9)
        assert result.per_class_ap == pytest.approx(per_class)


# ---------------------------------------------------------------- inputs and result shape


def test_result_metrics_keys_and_range():
    rng = np.random.default_rng(0)
    x, labels = clustered(rng, 50, 4, 3)
    result = retrieval_map(x, labels, progress=True)
    metrics = result.metrics()
    assert tuple(metrics) == ("mAP", "mAP@R", "R-precision", "P@1", "R@1", "R@5", "R@10")
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["R@1"] == metrics["P@1"]
    assert metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"]
    assert result.device == "cpu" and result.tie_rule == "pessimistic"


def test_string_labels_and_input_not_modified():
    x = np.array([[3.0, 4.0], [3.0, 4.1], [-1.0, 0.0], [-1.0, 0.2]], dtype=np.float32)
    before = x.copy()
    result = retrieval_map(x, np.array(["cat", "cat", "dog", "dog"]), progress=False)
    np.testing.assert_array_equal(x, before)
    assert result.map == 1.0 and set(result.per_class_ap) == {"cat", "dog"}
    as_objects = retrieval_map(x, np.array(["cat", "cat", "dog", "dog"], dtype=object), progress=False)
    assert as_objects.per_class_ap == result.per_class_ap


def test_bad_inputs_raise_featkit_errors():
    x = np.ones((4, 3), dtype=np.float32)
    labels = [0, 0, 1, 1]
    with pytest.raises(FeatkitError, match="dimensions"):
        retrieval_map(x, labels, np.ones((4, 2)), labels, progress=False)
    with pytest.raises(FeatkitError, match="gallery_labels"):
        retrieval_map(x, labels, x, progress=False)
    with pytest.raises(FeatkitError, match="one label per row"):
        retrieval_map(x, [0, 1], progress=False)
    with pytest.raises(FeatkitError, match="NaN"):
        retrieval_map(np.full((4, 3), np.nan), labels, progress=False)
    with pytest.raises(FeatkitError, match="metric"):
        retrieval_map(x, labels, metric="manhattan", progress=False)
    with pytest.raises(FeatkitError, match="too small"):
        retrieval_map(x, labels, max_memory=100, progress=False)
    with pytest.raises(FeatkitError, match="not a size"):
        retrieval_map(x, labels, max_memory="lots", progress=False)
