"""Exact full-ranking retrieval metrics (mAP, mAP@R, R-precision, P@1, R@k) over feature arrays.

Protocol (reference.md §2, "following DINOv2"): every query ranks the whole gallery by
similarity; the gallery items with the query's label are relevant. With no gallery the query set
is its own gallery (leave-one-out) and each query is removed **by its index** — never by its
position in the ranking, which ties and duplicate vectors can move. Queries without any relevant
gallery item are excluded from every metric and counted in ``n_excluded``.

Scores are what FAISS's flat indexes compute, in float32: the inner product of L2-normalised
vectors (``IndexFlatIP``, ``metric="cosine"``, default) or the negated squared L2 distance
(``IndexFlatL2``, ``metric="euclidean"``). Query chunks sized from ``max_memory`` are scored
against the gallery one at a time (on GPU when faiss sees one), so ranking the full gallery has
no k limit and bounded memory, and the results do not depend on the chunk size. Per query, only
the relevant items' scores and the scores at least as high as the lowest of them are sorted; a
relevant item's rank is its place among the relevant items plus the number of irrelevant items
scoring at least as high (the pessimistic tie rule, ``TIE_RULE_TEXT``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from featkit.errors import FeatkitError
from probes._faiss import ScoreBlocks, check_metric, parse_memory, prepare, rows_per_chunk
from probes.defaults import RETRIEVAL_MAX_MEMORY

TIE_RULE = "pessimistic"

#: The tie rule in words, for docs and result records.
TIE_RULE_TEXT = (
    "Ties are exactly equal float32 scores. A relevant gallery item tied with irrelevant ones "
    "is ranked after all of them (pessimistic rule); the order among tied relevant items does "
    "not change any metric. Every metric (AP, mAP@R, R-precision, P@1, R@k) uses this one rule. "
    "Exact duplicate gallery vectors always tie (each distinct vector is scored once); different "
    "vectors whose true similarities are equal can differ in the last float32 bit, because BLAS "
    "rounding depends on the matrix shape, and then do not tie."
)

#: Metric keys of ``RetrievalResult.metrics()``, in display order.
METRIC_KEYS = ("mAP", "mAP@R", "R-precision", "P@1", "R@1", "R@5", "R@10")

RECALL_KS = (1, 5, 10)


#: Chunks larger than this do not make the GEMM faster; they only cost memory.
MAX_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics averaged over the queries that have at least one relevant item.

    ``map``: AP = (1/R) Σ_k P@k·rel(k) over the full ranking (R relevant gallery items).
    ``map_at_r``: the same sum cut at rank R, still divided by R (Musgrave et al. 2020).
    ``r_precision``: relevant items in the top R, divided by R.
    ``precision_at_1``: the top-ranked item is relevant.
    ``recall_at_k``: at least one relevant item in the top k (metric-learning Recall@k, so
    R@1 = P@1).
    ``per_class_ap``: label -> mean AP of that label's queries.
    ``per_query_ap``: AP of every query in input order, NaN for excluded queries;
    ``per_query_ap_at_r`` and ``per_query_r_precision`` likewise; ``per_query_first_rank``: the
    rank of each query's best-ranked relevant item (0 for excluded queries).
    :meth:`per_query` gives every metric's per-query values, whose means are the metrics.
    """

    map: float
    map_at_r: float
    r_precision: float
    precision_at_1: float
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    per_class_ap: dict
    n_queries: int
    n_excluded: int
    n_gallery: int
    metric: str
    leave_one_out: bool
    tie_rule: str
    chunk_rows: int
    device: str
    per_query_ap: np.ndarray = field(repr=False, compare=False)
    per_query_ap_at_r: np.ndarray = field(repr=False, compare=False)
    per_query_r_precision: np.ndarray = field(repr=False, compare=False)
    per_query_first_rank: np.ndarray = field(repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        """The seven headline metrics as fractions in [0, 1], keyed as in ``METRIC_KEYS``."""
        values = (
            self.map,
            self.map_at_r,
            self.r_precision,
            self.precision_at_1,
            self.recall_at_1,
            self.recall_at_5,
            self.recall_at_10,
        )
        return dict(zip(METRIC_KEYS, (float(v) for v in values)))

    @property
    def scored(self) -> np.ndarray:
        """Indices of the scored queries (those with a relevant item), ascending."""
        return np.flatnonzero(self.per_query_first_rank > 0)

    def per_query(self) -> dict[str, np.ndarray]:
        """Each metric's value per scored query (in :attr:`scored` order), keyed as in
        ``METRIC_KEYS``: AP, AP@R and R-precision as floats; P@1 and R@k as 0/1 (bool). The
        metrics are their means, computed the same way (same tie rule)."""
        scored = self.scored
        first = self.per_query_first_rank[scored]
        values = [self.per_query_ap[scored], self.per_query_ap_at_r[scored],
                  self.per_query_r_precision[scored], first == 1,
                  *(first <= k for k in RECALL_KS)]
        return dict(zip(METRIC_KEYS, values))


def _labels_1d(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise FeatkitError(f"{name} must be a 1-D array with one label per row ({n}), got shape {arr.shape}")
    return arr


def _relevant_ranks(
    row: np.ndarray, relevant: np.ndarray, self_score: float | None, positions: np.ndarray
) -> np.ndarray:
    """1-based ranks of the relevant items under the pessimistic tie rule, in ascending score
    order (so the last entry is the best-ranked relevant item).

    ``relevant`` holds the relevant items' scores sorted ascending; ``positions[j]`` is j's place
    among the relevant items counted from the best (R - j). The rank of a relevant item with
    score t is its place among relevant items plus the number of irrelevant items scoring ≥ t.
    Only scores ≥ the lowest relevant score are sorted, not the whole row.
    """
    above_lowest = np.compress(row >= relevant[0], row)  # several times faster than row[mask]
    above_lowest.sort()
    n_ge_all = len(above_lowest) - np.searchsorted(above_lowest, relevant, side="left")
    n_ge_relevant = len(relevant) - np.searchsorted(relevant, relevant, side="left")
    n_ge_irrelevant = n_ge_all - n_ge_relevant
    if self_score is not None:
        n_ge_irrelevant -= self_score >= relevant
    return positions + n_ge_irrelevant


def retrieval_map(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    *,
    metric: str = "cosine",
    max_memory: int | str = RETRIEVAL_MAX_MEMORY,
    chunk_rows: int | None = None,
    use_gpu: bool | None = None,
    progress: bool = True,
) -> RetrievalResult:
    """Exact full-ranking retrieval metrics of ``query`` against ``gallery``.

    With ``gallery=None`` it is leave-one-out within the query set, each query removed by index.
    ``metric``: ``"cosine"`` (L2-normalised inner product, FAISS ``IndexFlatIP``) or
    ``"euclidean"`` (squared L2, ``IndexFlatL2``). Ties: see ``TIE_RULE_TEXT`` — a relevant
    item tied with irrelevant ones ranks after them.
    ``max_memory`` bounds the working memory this function allocates (normalised copies, the
    chunk × gallery float32 score block and per-row buffers; not the caller's arrays), as bytes
    or a string such as ``"2GB"`` (binary units); it sets the query chunk size (at most
    ``MAX_CHUNK_ROWS``), which ``chunk_rows`` overrides. Chunks are whole tiles of
    ``probes._faiss.TILE_ROWS`` queries and the results do not depend on their size.
    ``use_gpu``: None = GPU whenever faiss sees one.
    """
    check_metric(metric)
    leave_one_out = gallery is None
    if leave_one_out and gallery_labels is not None:
        raise FeatkitError("gallery_labels given without gallery: pass both, or neither for leave-one-out")
    if not leave_one_out and gallery_labels is None:
        raise FeatkitError("gallery given without gallery_labels: pass the gallery's labels too")

    budget = parse_memory(max_memory)
    q = prepare(query, metric, name="query features")
    g = q if leave_one_out else prepare(gallery, metric, name="gallery features")
    if q.shape[1] != g.shape[1]:
        raise FeatkitError(
            f"query features have {q.shape[1]} dimensions but gallery features have {g.shape[1]}: "
            "use features of the same model and kind"
        )
    n_query, n_gallery = len(q), len(g)
    q_labels = _labels_1d(query_labels, n_query, "query_labels")
    g_labels = q_labels if leave_one_out else _labels_1d(gallery_labels, n_gallery, "gallery_labels")

    classes, codes = np.unique(np.concatenate([q_labels, g_labels]), return_inverse=True)
    q_codes, g_codes = codes[:n_query], codes[n_query:]
    gallery_by_class = np.argsort(g_codes, kind="stable")  # ascending gallery index within a class
    class_bounds = np.concatenate([[0], np.cumsum(np.bincount(g_codes, minlength=len(classes)))])
    n_relevant = class_bounds[q_codes + 1] - class_bounds[q_codes] - int(leave_one_out)
    scored = n_relevant > 0
    n_scored = int(scored.sum())
    if n_scored == 0:
        raise FeatkitError(
            "no query has a relevant gallery item (no shared labels"
            + (", or every class has a single query" if leave_one_out else "")
            + "): check the query and gallery splits"
        )

    blocks = ScoreBlocks(g, metric, use_gpu=use_gpu)
    if chunk_rows is None:
        fixed = (
            q.nbytes
            + (0 if leave_one_out else g.nbytes)
            + blocks.extra_bytes
            + 64 * (n_query + n_gallery)  # labels, codes, per-query results
            + 10 * n_gallery  # per-row buffers: comparison mask, scores above the lowest relevant
        )
        tile_bytes = blocks.tile_rows * blocks.bytes_per_row
        if budget - fixed < tile_bytes:
            raise FeatkitError(
                f"max memory {max_memory!r} is too small for {n_query} queries × {n_gallery} gallery "
                f"items of dimension {q.shape[1]}: allow at least {math.ceil((fixed + tile_bytes) / 2**20)} MiB"
            )
        fitting = rows_per_chunk(budget - fixed, blocks.bytes_per_row, MAX_CHUNK_ROWS)
        chunk_rows = fitting // blocks.tile_rows * blocks.tile_rows
    # Whole tiles per chunk, so every chunk starts at a multiple of the tile size.
    chunk_rows = min(blocks.round_rows(chunk_rows), blocks.round_rows(n_query))

    ap = np.full(n_query, np.nan)
    ap_at_r = np.full(n_query, np.nan)
    r_precision = np.full(n_query, np.nan)
    first_rank = np.zeros(n_query, dtype=np.int64)
    positions_desc = np.arange(max(1, int(n_relevant.max())), 0, -1)

    chunks = range(0, n_query, chunk_rows)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"retrieval ({blocks.device})", unit="chunk", total=len(chunks))
    for start in chunks:
        scores = blocks.block(q[start : start + chunk_rows])
        for offset, row in enumerate(scores):
            qi = start + offset
            n_rel = int(n_relevant[qi])
            if n_rel <= 0:
                continue
            c = q_codes[qi]
            relevant_idx = gallery_by_class[class_bounds[c] : class_bounds[c + 1]]
            relevant = row[relevant_idx]
            self_score = None
            if leave_one_out:
                self_pos = int(np.searchsorted(relevant_idx, qi))
                relevant[self_pos] = relevant[-1]
                relevant = relevant[:-1]
                self_score = row[qi]
            relevant.sort()
            places = positions_desc[len(positions_desc) - n_rel :]
            ranks = _relevant_ranks(row, relevant, self_score, places)
            precision = places / ranks
            within_r = ranks <= n_rel
            ap[qi] = precision.mean()
            ap_at_r[qi] = precision[within_r].sum() / n_rel
            r_precision[qi] = np.count_nonzero(within_r) / n_rel
            first_rank[qi] = ranks[-1]

    first = first_rank[scored]
    per_class_ap = {}
    scored_codes = q_codes[scored]
    class_ap_sum = np.bincount(scored_codes, weights=ap[scored], minlength=len(classes))
    class_count = np.bincount(scored_codes, minlength=len(classes))
    for c in np.flatnonzero(class_count):
        label = classes[c].item() if isinstance(classes[c], np.generic) else classes[c]
        per_class_ap[label] = float(class_ap_sum[c] / class_count[c])

    recalls = {k: float(np.mean(first <= k)) for k in RECALL_KS}
    return RetrievalResult(
        map=float(ap[scored].mean()),
        map_at_r=float(ap_at_r[scored].mean()),
        r_precision=float(r_precision[scored].mean()),
        precision_at_1=float(np.mean(first == 1)),
        recall_at_1=recalls[1],
        recall_at_5=recalls[5],
        recall_at_10=recalls[10],
        per_class_ap=per_class_ap,
        n_queries=n_scored,
        n_excluded=n_query - n_scored,
        n_gallery=n_gallery,
        metric=metric,
        leave_one_out=leave_one_out,
        tie_rule=TIE_RULE,
        chunk_rows=chunk_rows,
        device=blocks.device,
        per_query_ap=ap,
        per_query_ap_at_r=ap_at_r,
        per_query_r_precision=r_precision,
        per_query_first_rank=first_rank,
    )
