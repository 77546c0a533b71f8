"""Exact similarity with FAISS flat-index semantics, on GPU when faiss sees one.

Shared by the probes that compare every query with every gallery item (retrieval, kNN):

- ``prepare(x, metric)``: float32 C-contiguous copy, L2-normalised for ``"cosine"``
  (``faiss.normalize_L2``), so inner products are what ``IndexFlatIP`` scores.
- ``ScoreBlocks``: the exact ``queries × gallery`` score matrix, one row chunk at a time, as
  ``IndexFlatIP`` (inner product) / ``IndexFlatL2`` (squared L2, negated so that higher is
  always better) compute it. A flat index's ``search`` is a top-k: on GPU k ≤ 2048, and asking
  for k = N on CPU keeps an N-long heap per query. Full rankings therefore take the whole score
  block from FAISS's brute-force kernels (``pairwise_distance_gpu`` on GPU; on CPU the same
  BLAS sgemm that the flat indexes run, and ``pairwise_L2sqr``) into one reused buffer.
- ``knn_search``: exact top-k with a flat index (GPU when available and k ≤ 2048).
- ``parse_memory`` / ``rows_per_chunk``: turn a memory budget such as ``"2GB"`` into a chunk size.
"""

from __future__ import annotations

import re

import faiss
import numpy as np

from featkit.errors import FeatkitError

METRICS = ("cosine", "euclidean")

#: Largest k that GPU FAISS's ``search`` accepts.
GPU_MAX_K = 2048

#: Query rows per BLAS/FAISS call: large enough for full GEMM speed, fixed so that scores do
#: not depend on the chunk size (see ``ScoreBlocks``).
TILE_ROWS = 512

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(value: int | float | str) -> int:
    """Bytes from an int or a size string: ``"2GB"``, ``"512M"``, ``"1.5GiB"`` (binary units)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = int(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
        if not match:
            raise FeatkitError(
                f"max memory {value!r} is not a size: write e.g. '2GB', '512MB' or a byte count"
            )
        size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise FeatkitError(f"max memory {value!r} must be positive")
    return size


def rows_per_chunk(budget_bytes: int, bytes_per_row: int, n_rows: int) -> int:
    """How many rows of ``bytes_per_row`` fit in ``budget_bytes`` (at least 1, at most n_rows)."""
    return int(max(1, min(n_rows, budget_bytes // max(1, bytes_per_row))))


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus and get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources"))


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise FeatkitError(f"metric {metric!r} is unknown: use one of {', '.join(METRICS)}")
    return metric


def prepare(x: np.ndarray, metric: str, *, name: str = "features") -> np.ndarray:
    """A float32, C-contiguous 2-D copy of ``x``, L2-normalised for cosine; rejects NaN/inf."""
    check_metric(metric)
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FeatkitError(f"{name} must be a non-empty 2-D array (N × D), got shape {arr.shape}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    # A float64 row sum of float32 values cannot overflow: it is finite iff every value is.
    if not np.isfinite(out.sum(axis=1, dtype=np.float64)).all():
        raise FeatkitError(f"{name} contain NaN or infinite values: re-extract or drop those rows")
    if metric == "cosine":
        faiss.normalize_L2(out)
    else:
        squared_norms = np.einsum("ij,ij->i", out, out, dtype=np.float64)
        if squared_norms.max() > 1e37:
            raise FeatkitError(f"{name} are too large for float32 squared distances: rescale them")
    return out


def distinct_rows(x: np.ndarray, chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact duplicate rows of a float32 matrix: ``(representatives, inverse)`` such that
    ``x[representatives][inverse]`` equals ``x`` bit for bit, or None when all rows differ.

    A cheap per-row hash of the bit patterns finds candidate groups; only those are compared
    exactly. Memory stays O(chunk_rows × D).
    """
    bits = x.view(np.uint32)
    keys = np.empty(len(x), dtype=np.uint64)
    for start in range(0, len(x), chunk_rows):
        part = bits[start : start + chunk_rows]
        keys[start : start + chunk_rows] = (part * np.uint32(2654435761)).sum(axis=1, dtype=np.uint64)
    _, key_inverse, key_counts = np.unique(keys, return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(key_counts[key_inverse] > 1)
    if len(candidates) == 0:
        return None
    rows = np.ascontiguousarray(x[candidates]).view(np.dtype((np.void, x.shape[1] * x.itemsize)))
    _, first, group = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    if len(first) == len(candidates):
        return None
    canonical = np.arange(len(x))
    canonical[candidates] = candidates[first][group.ravel()]  # each duplicate -> its first copy
    representatives, inverse = np.unique(canonical, return_inverse=True)
    return representatives, inverse


class ScoreBlocks:
    """Exact scores of query row chunks against a fixed gallery (higher = more similar).

    ``block(queries)`` returns a ``len(queries) × len(gallery)`` view into a buffer reused between
    calls (valid until the next call): inner products for cosine (inputs already normalised by
    ``prepare``), negated squared L2 distances for euclidean.

    A float32 GEMM's last bit depends on the matrix shape and on where a vector sits in it, so
    two guards make every score a function of the data alone, not of the chunk size:

    - queries are scored in calls of exactly ``tile_rows`` rows (the last one zero-padded); a
      caller whose chunks start at multiples of ``tile_rows`` gets bit-identical scores for any
      chunk size that is a multiple of it (``round_rows``);
    - identical gallery vectors are scored once and the score copied, so exact duplicates
      always tie.
    """

    def __init__(
        self,
        gallery: np.ndarray,
        metric: str,
        *,
        use_gpu: bool | None = None,
        tile_rows: int = TILE_ROWS,
    ):
        self.metric = check_metric(metric)
        self.n_gallery = len(gallery)
        self.tile_rows = tile_rows
        duplicates = distinct_rows(gallery)
        if duplicates is None:
            self.gallery, self._inverse = gallery, None
        else:
            representatives, self._inverse = duplicates
            self.gallery = np.ascontiguousarray(gallery[representatives])
        self.use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._gpu_resources = faiss.StandardGpuResources() if self.use_gpu else None
        self._padded_tile = np.zeros((tile_rows, gallery.shape[1]), dtype=np.float32)
        self._scores: np.ndarray | None = None
        self._distinct_scores: np.ndarray | None = None

    @property
    def device(self) -> str:
        return "gpu" if self.use_gpu else "cpu"

    @property
    def n_distinct(self) -> int:
        return len(self.gallery)

    @property
    def extra_bytes(self) -> int:
        """Memory held besides the score buffers: the padded tile and the distinct vectors."""
        distinct = 0 if self._inverse is None else self.gallery.nbytes + 8 * self.n_gallery
        return self._padded_tile.nbytes + distinct

    @property
    def bytes_per_row(self) -> int:
        """Score-buffer bytes per query row of a chunk."""
        return 4 * self.n_gallery + (0 if self._inverse is None else 4 * self.n_distinct)

    def round_rows(self, rows: int) -> int:
        """``rows`` rounded up to a whole number of tiles."""
        return -(-max(1, rows) // self.tile_rows) * self.tile_rows

    def block(self, queries: np.ndarray) -> np.ndarray:
        n = len(queries)
        rows = self.round_rows(n)
        if self._scores is None or len(self._scores) < rows:
            self._scores = np.empty((rows, self.n_gallery), dtype=np.float32)
            if self._inverse is not None:
                self._distinct_scores = np.empty((rows, self.n_distinct), dtype=np.float32)
        target = self._scores if self._inverse is None else self._distinct_scores
        for start in range(0, n, self.tile_rows):
            tile = queries[start : start + self.tile_rows]
            if len(tile) < self.tile_rows:
                self._padded_tile[: len(tile)] = tile
                self._padded_tile[len(tile) :] = 0.0
                tile = self._padded_tile
            self._score(tile, target[start : start + self.tile_rows])
        out = self._scores[:n]
        if self._inverse is not None:
            np.take(self._distinct_scores[:n], self._inverse, axis=1, out=out)
        return out

    def _score(self, queries: np.ndarray, out: np.ndarray) -> None:
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if self.use_gpu:
            faiss.pairwise_distance_gpu(
                self._gpu_resources, queries, self.gallery, D=out, metric=faiss_metric
            )
        elif self.metric == "cosine":
            np.matmul(queries, self.gallery.T, out=out)
        else:
            faiss.pairwise_L2sqr(
                queries.shape[1],
                len(queries),
                faiss.swig_ptr(queries),
                len(self.gallery),
                faiss.swig_ptr(self.gallery),
                faiss.swig_ptr(out),
            )
        if self.metric == "euclidean":
            np.negative(out, out=out)


def flat_index(dim: int, metric: str, *, use_gpu: bool | None = None) -> faiss.Index:
    """An empty ``IndexFlatIP`` (cosine; add normalised vectors) or ``IndexFlatL2``, moved to
    the GPU when faiss sees one and ``use_gpu`` is not False."""
    index = faiss.IndexFlatIP(dim) if check_metric(metric) == "cosine" else faiss.IndexFlatL2(dim)
    if gpu_available() if use_gpu is None else use_gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def knn_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    metric: str = "cosine",
    *,
    chunk_rows: int = 4096,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query in the gallery: (scores, indices), each ``len(queries) × k``.

    Inputs are raw features (normalised here for cosine). Scores are inner products for cosine
    and squared L2 distances for euclidean, in FAISS's order (ties by gallery index). The GPU is
    used only when k ≤ 2048, GPU FAISS's limit.
    """
    q = prepare(queries, metric, name="queries")
    g = prepare(gallery, metric, name="gallery")
    if q.shape[1] != g.shape[1]:
        raise FeatkitError(f"queries have {q.shape[1]} dimensions but gallery has {g.shape[1]}")
    if not 1 <= k <= len(g):
        raise FeatkitError(f"k={k} must be between 1 and the gallery size {len(g)}")
    gpu = (gpu_available() if use_gpu is None else use_gpu) and k <= GPU_MAX_K
    index = flat_index(g.shape[1], metric, use_gpu=gpu)
    index.add(g)
    scores = np.empty((len(q), k), dtype=np.float32)
    indices = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk_rows):
        stop = start + chunk_rows
        scores[start:stop], indices[start:stop] = index.search(q[start:stop], k)
    return scores, indices
