"""Zero-shot classification as in the CLIP paper: class embeddings from prompt embeddings, and
images classified by cosine similarity to them. Pure functions over arrays.

A class embedding is the mean of its prompts' L2-normalised embeddings, L2-normalised again
(:func:`class_embeddings`). Images are scored against the class embeddings block by block;
scaling an image's scores by its norm changes no ranking, so the image features are used as
they are and a block costs its GEMM plus one comparison pass: the rank of the true class is the
number of classes scoring higher, plus the tied ones of lower index (the tie rule of
:func:`probes.classification.score_classification`, so the metrics are the same). A NaN or
infinite feature shows as a non-finite true-class score and is refused there, without another
pass over the features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from probes._checks import check_finite
from probes.classification import ClassificationMetrics

#: bytes of class scores per GEMM (one call for most test sets: fewer, larger GEMMs)
GEMM_BYTES = 256 << 20
#: bytes of class scores per comparison pass (they stay in cache between its two passes)
PASS_BYTES = 4 << 20
TOP_K = 5


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def class_embeddings(prompt_embeddings: np.ndarray) -> np.ndarray:
    """``(C, T, D)`` embeddings of each class's T prompts -> ``(C, D)`` class embeddings:
    each prompt embedding normalised, averaged over the templates, normalised again."""
    prompts = np.asarray(prompt_embeddings, dtype=np.float32)
    if prompts.ndim != 3 or 0 in prompts.shape:
        raise ValueError(f"prompt embeddings must be (classes, templates, dim), got {prompts.shape}")
    check_finite(prompts.reshape(-1, prompts.shape[-1]), "prompt embeddings")
    return l2_normalize(l2_normalize(prompts).mean(axis=1))


def block_rows(n_classes: int, budget: int = GEMM_BYTES) -> int:
    """Images per block: about ``budget`` bytes of float32 scores."""
    return max(64, budget // (4 * max(1, n_classes)))


def score_blocks(
    features: np.ndarray,
    classes: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    rows: int | None = None,
    device: str | None = "cpu",
) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows slice, scores)`` blocks of ``features @ classes.T`` (cosine up to each row's
    positive scale). ``groups`` (old class -> new class, e.g. a label map) scores each new class
    by its best member."""
    import torch

    from featkit._device import torch_device
    from probes._matmul import linear, pack

    device_t = torch_device(device)
    weight = torch.from_numpy(np.ascontiguousarray(classes, dtype=np.float32)).to(device_t)
    step = rows or block_rows(len(classes))
    # oneDNN's blocked weight layout pays off over several GEMMs; for one it costs what it saves
    packed = pack(weight) if len(features) > step else None
    grouping = _grouping(groups) if groups is not None else None
    with torch.inference_mode():
        for start in range(0, len(features), step):
            stop = min(len(features), start + step)
            x = torch.from_numpy(np.ascontiguousarray(features[start:stop], dtype=np.float32))
            scores = linear(x.to(device_t), weight, packed).cpu().numpy()
            if grouping is not None:
                order, starts = grouping
                scores = np.maximum.reduceat(scores[:, order], starts, axis=1)
            yield slice(start, stop), scores


def _grouping(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column order and group starts for ``np.maximum.reduceat`` over each group's columns."""
    groups = np.asarray(groups, dtype=np.int64)
    if groups.ndim != 1 or groups.min() < 0 or set(np.unique(groups)) != set(
            range(int(groups.max()) + 1)):
        raise ValueError("groups must map every class to a group id, ids 0..G-1 all used")
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])
    return order, starts


def true_class_ranks(scores: np.ndarray, labels: np.ndarray, *, first_row: int = 0,
                     buffer: np.ndarray | None = None) -> np.ndarray:
    """Rank (0 = best) of each row's true class: classes scoring higher, plus tied classes of
    lower index. One comparison pass (at least the true score), a second (above it) unless the
    true class wins every row, and a look at the lower classes of rows with exact ties. A non-finite true score (a NaN or infinite
    feature) is a one-line error naming the row (``first_row``: the index of row 0).
    ``buffer``: a reusable bool array of at least ``scores.size`` elements for the flags."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    true = scores[rows, labels][:, None]
    _check_true_scores(true[:, 0], first_row)
    if buffer is None or buffer.size < scores.size:
        buffer = np.empty(scores.size, dtype=bool)
    flags = buffer[:scores.size].reshape(scores.shape)
    at_least = _count(np.greater_equal(scores, true, out=flags))  # the true class included
    ranks = np.zeros(len(labels), dtype=np.int64)
    if np.any(at_least > 1):  # another class scores at least as high somewhere in the block
        ranks = _count(np.greater(scores, true, out=flags))
        for i in np.flatnonzero(at_least - 1 > ranks):  # exact ties: lower index first
            ranks[i] += int(np.count_nonzero(scores[i, :labels[i]] == true[i, 0]))
    return ranks


def _count(flags: np.ndarray) -> np.ndarray:
    """True values per row, summed as bytes into the narrowest integer that holds them (a
    third of a comparison pass, where a bool sum into int64 costs as much as the pass)."""
    dtype = np.uint16 if flags.shape[1] < 1 << 16 else np.int64
    return flags.view(np.uint8).sum(axis=1, dtype=dtype).astype(np.int64)


def top_k_hits(ranks: np.ndarray, n_classes: int, k: int = TOP_K) -> np.ndarray:
    """Per image: is the true class among the top ``min(k, n_classes)`` (the 0/1 scores whose
    mean is top-k; ``k = 1``: top-1)."""
    return np.asarray(ranks) < min(k, n_classes)


def metrics_from_ranks(ranks: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                       k: int = TOP_K) -> ClassificationMetrics:
    """Top-1, top-``min(k, C)`` and mean per-class accuracy from the true classes' ranks."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(class_names)
    if labels.size == 0:
        return ClassificationMetrics(float("nan"), float("nan"), float("nan"), {}, 0)
    hit1 = top_k_hits(ranks, n_classes, 1)
    counts = np.bincount(labels, minlength=n_classes)
    correct = np.bincount(labels, weights=hit1, minlength=n_classes)
    present = np.flatnonzero(counts)
    return ClassificationMetrics(
        top1=float(hit1.mean()),
        top5=float(top_k_hits(ranks, n_classes, k).mean()),
        mean_per_class=float(np.mean(correct[present] / counts[present])),
        per_class={class_names[c]: float(correct[c] / counts[c]) for c in present},
        n_samples=int(labels.size),
    )


def zeroshot_classify(
    features: np.ndarray,
    labels: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    groups: np.ndarray | None = None,
    device: str | None = "cpu",
) -> ClassificationMetrics:
    """Zero-shot metrics of image ``features`` (N x D) against class embeddings ``classes``
    (C x D; :func:`class_embeddings`). ``groups``: old class -> new class (a label map; a new
    class scores as its best member), ``labels`` and ``class_names`` then in the new space."""
    return zeroshot_classify_ranks(features, labels, classes, class_names, groups=groups,
                                   device=device)[0]


def zeroshot_classify_ranks(
    features: np.ndarray,
    labels: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    groups: np.ndarray | None = None,
    device: str | None = "cpu",
) -> tuple[ClassificationMetrics, np.ndarray]:
    """:func:`zeroshot_classify`'s metrics and the true class's rank of every image (0 =
    predicted), from which the per-image scores behind top-1 and top-k follow."""
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.float32)
    if features.ndim != 2 or classes.ndim != 2 or features.shape[1] != classes.shape[1]:
        raise ValueError(f"features {features.shape} and class embeddings {classes.shape} must "
                         f"be 2-D with the same width")
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows for {len(labels)} labels")
    check_finite(classes, "class embeddings")
    n_out = len(classes) if groups is None else int(np.max(groups)) + 1
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_out)]
    if len(names) != n_out:
        raise ValueError(f"{len(names)} class names for {n_out} classes")
    if labels.size and (labels.min() < 0 or labels.max() >= n_out):
        raise ValueError(f"labels must lie in [0, {n_out}); got [{labels.min()}, {labels.max()}]")
    ranks = zeroshot_ranks(features, labels, classes, groups=groups, device=device)
    return metrics_from_ranks(ranks, labels, names), ranks


def _check_true_scores(true: np.ndarray, start: int) -> None:
    """Refuse images whose true-class score is not finite: a NaN or infinite feature makes it
    so (the features themselves are not scanned again; the task loader checked them)."""
    bad = np.flatnonzero(~np.isfinite(true))
    if bad.size:
        from featkit.errors import FeatkitError

        rows = ", ".join(str(start + i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise FeatkitError(f"image features: {bad.size} row(s) contain NaN or infinite values "
                           f"(rows {rows}); re-extract or drop those rows")


def zeroshot_ranks(features: np.ndarray, labels: np.ndarray, classes: np.ndarray, *,
                   groups: np.ndarray | None = None, device: str | None = "cpu") -> np.ndarray:
    """The rank of each image's true class among the class scores (0 = predicted), block by
    block (:func:`true_class_ranks`); scores of subsets (one dataset of a merged run) follow
    from it with :func:`metrics_from_ranks`."""
    labels = np.asarray(labels, dtype=np.int64)
    ranks = np.zeros(len(labels), dtype=np.int64)
    step = block_rows(len(classes), PASS_BYTES)
    buffer = None  # one flags buffer for every pass: fresh pages would cost a fault each
    for rows, scores in score_blocks(features, classes, groups=groups, device=device):
        buffer = buffer if buffer is not None else np.empty(step * scores.shape[1], dtype=bool)
        for start in range(0, len(scores), step):
            part = slice(rows.start + start, rows.start + min(len(scores), start + step))
            ranks[part] = true_class_ranks(scores[start:start + step], labels[part],
                                           first_row=part.start, buffer=buffer)
    return ranks


def zeroshot_scores(features: np.ndarray, classes: np.ndarray, *,
                    groups: np.ndarray | None = None, device: str | None = "cpu") -> np.ndarray:
    """The whole ``N x C`` score matrix (cosine up to each row's scale), for callers that keep
    it (multiple-choice distractors)."""
    check_finite(features, "image features")
    n_out = len(classes) if groups is None else int(np.max(groups)) + 1
    out = np.empty((len(features), n_out), dtype=np.float32)
    for rows, scores in score_blocks(features, classes, groups=groups, device=device):
        out[rows] = scores
    return out
