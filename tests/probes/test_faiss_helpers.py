"""The FAISS helpers shared by the retrieval and kNN probes."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes._faiss import ScoreBlocks, distinct_rows, knn_search, parse_memory, prepare


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2GB", 2 * 1024**3), ("512MB", 512 * 1024**2), ("1.5GiB", int(1.5 * 1024**3)), ("300k", 300 * 1024), (4096, 4096)],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1GB", 0, "2 parsecs"])
def test_parse_memory_rejects(bad):
    with pytest.raises(FeatkitError):
        parse_memory(bad)


def test_prepare_normalises_a_copy():
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    out = prepare(x, "cosine")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(x, [[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_array_equal(prepare(x, "euclidean"), x.astype(np.float32))


def test_distinct_rows():
    rng = np.random.default_rng(0)
    assert distinct_rows(rng.standard_normal((50, 6)).astype(np.float32)) is None
    base = rng.standard_normal((4, 6)).astype(np.float32)
    pick = np.array([2, 0, 2, 3, 0, 2, 1])
    representatives, inverse = distinct_rows(base[pick])
    np.testing.assert_array_equal(base[pick][representatives][inverse], base[pick])
    np.testing.assert_array_equal(representatives, [0, 1, 3, 6])  # first copy of each vector
    # Same bits up to a permutation of the coordinates: hash collision, not a duplicate.
    assert distinct_rows(np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32)) is None


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_score_blocks_match_direct_scores(metric):
    rng = np.random.default_rng(1)
    gallery = prepare(np.vstack([rng.standard_normal((40, 5)), np.ones((3, 5))]), metric)
    queries = prepare(rng.standard_normal((9, 5)), metric)
    blocks = ScoreBlocks(gallery, metric, use_gpu=False)
    assert blocks.n_distinct == 41 and blocks.device == "cpu"
    q64, g64 = queries.astype(np.float64), gallery.astype(np.float64)
    if metric == "cosine":
        expected = q64 @ g64.T
    else:
        expected = -((q64[:, None, :] - g64[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(blocks.block(queries[:4]), expected[:4], atol=1e-5)
    scores = blocks.block(queries[4:])
    np.testing.assert_allclose(scores, expected[4:], atol=1e-5)
    assert (scores[:, 40] == scores[:, 41]).all() and (scores[:, 41] == scores[:, 42]).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_search_matches_brute_force(metric):
    rng = np.random.default_rng(2)
    gallery = rng.standard_normal((120, 8)).astype(np.float32)
    queries = rng.standard_normal((30, 8)).astype(np.float32)
    scores, indices = knn_search(queries, gallery, 5, metric, chunk_rows=7)
    q, g = prepare(queries, metric).astype(np.float64), prepare(gallery, metric).astype(np.float64)
    full = q @ g.T if metric == "cosine" else ((q[:, None] - g[None]) ** 2).sum(-1)
    order = np.argsort(-full if metric == "cosine" else full, axis=1)[:, :5]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_allclose(scores, np.take_along_axis(full, order, 1), atol=1e-5)
    with pytest.raises(FeatkitError, match="k=0"):
        knn_search(queries, gallery, 0, metric)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_score_blocks_do_not_depend_on_the_chunking(metric):
    # Inexact data: any change of BLAS call shape would show in the last bits.
    rng = np.random.default_rng(3)
    gallery = prepare(rng.integers(0, 5, (200, 24)) / 3.0, metric)
    queries = prepare(rng.integers(0, 5, (40, 24)) / 7.0, metric)
    blocks = ScoreBlocks(gallery, metric, use_gpu=False, tile_rows=8)
    assert blocks.round_rows(1) == 8 and blocks.round_rows(17) == 24
    whole = blocks.block(queries).copy()
    for chunk in (8, 16, 24):
        parts = [blocks.block(queries[s : s + chunk]).copy() for s in range(0, 40, chunk)]
        np.testing.assert_array_equal(np.vstack(parts), whole)
    # A zero-padded last tile gives the rows the same bits as a full tile.
    np.testing.assert_array_equal(blocks.block(queries[16:21]), whole[16:21])
