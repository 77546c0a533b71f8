"""Percentile bootstrap intervals over per-item scores, the paired bootstrap and McNemar's test.

Most metrics featkit reports with an interval are a mean of per-item scores: top-1 is the mean
of 0/1 correctness over test items, mAP the mean of per-query average precision. Their interval
resamples those scores (never the features: the metric is not recomputed), which costs one
gather per resample; the others are recomputed on each resample (below).

Resampling is defined as this loop, which :func:`resample_means` reproduces exactly with the
same seed (it only draws the same numbers in blocks)::

    rng = numpy.random.default_rng(seed)
    for b in range(resamples):
        idx = rng.integers(0, n, size=n)
        stats[b] = values[idx].mean()

With strata (the datasets of a merged run) each stratum is resampled on its own, from its own
generator ``numpy.random.default_rng(s)`` for ``s`` in ``SeedSequence(seed).spawn(k)``, and the
statistic is the mean over all items. Intervals are percentile intervals
(``numpy.percentile`` of the resampled statistics at ``(1 - level) / 2`` and ``(1 + level) / 2``).

Metrics that are no mean of per-item scores (ROC-AUC, TAR at a FAR, worst-group accuracy,
macro-AUROC over attributes) get :func:`bootstrap_statistic`: the items are resampled the same
way and the statistic is recomputed on every resample. Its defining loop, which it runs as
written (the statistic dominates the cost)::

    rng = numpy.random.default_rng(seed)
    for b in range(resamples):
        idx = rng.integers(0, n, size=n)
        stats[b] = statistic(*(a[idx] for a in arrays))

With ``strata`` (one label per item, e.g. the evaluated group, or same / different pair) the
strata are taken in sorted order of their labels, stratum ``j`` draws from
``numpy.random.default_rng(SeedSequence(seed).spawn(k)[j])`` its own ``n_j`` items among its
members, and ``idx`` is the concatenation, so every resample keeps every stratum's size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from featkit.errors import FeatkitError

#: Default number of bootstrap resamples and confidence level.
RESAMPLES = 1000
LEVEL = 0.95

#: Index draws held in memory at once (8M int64 = 64 MB).
_BLOCK_DRAWS = 1 << 23


@dataclass(frozen=True)
class BootstrapInterval:
    """A percentile bootstrap interval of a mean of per-item scores.

    ``estimate`` is the mean of the scores (the metric itself), ``low``/``high`` the interval
    at ``level``; ``n`` items were resampled ``resamples`` times from ``seed``."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    seed: int
    n: int

    def row(self) -> dict[str, float | int]:
        """The JSON entry of a record's ``ci``: estimate, low, high and n."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class PairedComparison:
    """Paired bootstrap of the difference ``mean(a) - mean(b)`` over the same items.

    ``pvalue``: two-sided, ``(1 + #{|d* - d| >= |d|}) / (resamples + 1)`` (the resampled
    differences centred on the observed one stand for the null distribution)."""

    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    pvalue: float
    level: float
    resamples: int
    seed: int
    n: int


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired 0/1 scores: ``only_a`` items right only under A, ``only_b``
    right only under B; ``exact`` the two-sided binomial test (statsmodels' default), else
    the chi-square statistic with continuity correction."""

    only_a: int
    only_b: int
    statistic: float
    pvalue: float
    exact: bool


def check_level(level: float) -> None:
    """A confidence level strictly between 0 and 1, or a one-line error."""
    if not (isinstance(level, (int, float)) and 0.0 < float(level) < 1.0):
        raise FeatkitError(f"the confidence level must lie strictly between 0 and 1, got {level!r}")


def check_resamples(resamples: int) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise FeatkitError(f"the number of bootstrap resamples must be a positive integer, "
                           f"got {resamples!r}")


def _scores(values: np.ndarray, name: str = "scores") -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise FeatkitError(f"{name} must be one score per item (1-D), got shape {array.shape}")
    if array.size == 0:
        raise FeatkitError(f"{name}: no items to resample")
    if array.dtype == bool:
        return array.view(np.uint8)
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise FeatkitError(f"{name} hold NaN or infinite values; drop the unscored items first")
    return array


def _draw_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Sums of ``resamples`` resamples of ``values`` (n draws each) from ``rng``, in the order
    of the defining loop."""
    n = values.shape[0]
    sums = np.empty(resamples, dtype=np.float64)
    rows = max(1, _BLOCK_DRAWS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        sums[start:stop] = np.take(values, idx).sum(axis=1, dtype=np.float64)
    return sums


def resample_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, *,
                   strata: Sequence[int] | None = None) -> np.ndarray:
    """The mean of each of ``resamples`` bootstrap resamples of per-item ``values`` (see the
    module docstring for the exact procedure). ``strata``: sizes of consecutive item blocks
    (datasets of a merged run) resampled separately; the mean is over all items."""
    check_resamples(resamples)
    array = _scores(values)
    n = array.shape[0]
    if strata is None or len(strata) <= 1:
        return _draw_means(array, resamples, np.random.default_rng(seed)) / n
    sizes = [int(s) for s in strata]
    if sum(sizes) != n or min(sizes) < 1:
        raise FeatkitError(f"strata sizes {sizes} must be positive and add up to {n} items")
    total = np.zeros(resamples, dtype=np.float64)
    offsets = np.cumsum([0, *sizes])
    for child, lo, hi in zip(np.random.SeedSequence(seed).spawn(len(sizes)), offsets[:-1],
                             offsets[1:]):
        total += _draw_means(array[lo:hi], resamples, np.random.default_rng(child))
    return total / n


def resample_means_shared(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
                          ) -> np.ndarray:
    """:func:`resample_means` of every column of ``values`` (``n_items x n_systems``: several
    systems scored on the same items) with the same draws: ``resamples x n_systems``, equal to
    resampling each column alone with ``seed``. One resample's counts of each item times the
    score matrix, so the cost is one GEMM instead of a gather per system."""
    check_resamples(resamples)
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise FeatkitError(f"scores must be items x systems, got shape {matrix.shape}")
    n = matrix.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, matrix.shape[1]), dtype=np.float64)
    rows = max(1, _BLOCK_DRAWS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
        out[start:stop] = counts @ matrix
    return out / n


def percentile_interval(stats: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles."""
    check_level(level)
    low, high = np.percentile(stats, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def bootstrap_mean(values: np.ndarray, *, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = 0, strata: Sequence[int] | None = None) -> BootstrapInterval:
    """The percentile bootstrap interval of the mean of per-item ``values`` (0/1 correctness,
    per-query AP, ...)."""
    check_level(level)
    array = _scores(values)
    stats = resample_means(array, resamples, seed, strata=strata)
    low, high = percentile_interval(stats, level)
    return BootstrapInterval(float(array.mean(dtype=np.float64)), low, high, float(level),
                             int(resamples), int(seed), int(array.shape[0]))


#: A statistic of resampled items: the item arrays (resampled along axis 0) -> one value.
Statistic = Callable[..., float]


def _item_arrays(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The arrays as numpy arrays of one length ``n`` along axis 0, or a one-line error."""
    items = [np.asarray(a) for a in arrays]
    if not items:
        raise FeatkitError("a bootstrapped statistic needs at least one array of items")
    lengths = {a.shape[0] if a.ndim else -1 for a in items}
    if len(lengths) != 1 or -1 in lengths:
        raise FeatkitError(f"the item arrays must have one length along axis 0, got shapes "
                           f"{[a.shape for a in items]}")
    n = lengths.pop()
    if n == 0:
        raise FeatkitError("no items to resample")
    return items, n


def _strata_members(strata: np.ndarray, n: int) -> list[np.ndarray]:
    """Each stratum's item indices (ascending), strata in sorted order of their labels."""
    labels = np.asarray(strata)
    if labels.shape != (n,):
        raise FeatkitError(f"strata must give one label per item ({n}), got shape "
                           f"{labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes))[:-1]
    return np.split(order, bounds)


def resample_statistics(arrays: Sequence[np.ndarray], statistics: Mapping[str, Statistic],
                        resamples: int = RESAMPLES, seed: int = 0, *,
                        strata: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every statistic of every one of ``resamples`` bootstrap resamples of the items (the
    module docstring's loop; all statistics see the same resamples). ``arrays``: per-item
    arrays indexed along axis 0, passed to each statistic in order. A statistic that is not
    finite on some resample is a one-line error naming it."""
    check_resamples(resamples)
    items, n = _item_arrays(arrays)
    if not statistics:
        raise FeatkitError("no statistic to bootstrap")
    out = {name: np.empty(resamples, dtype=np.float64) for name in statistics}
    if strata is None:
        generators, members = [np.random.default_rng(seed)], [np.arange(n)]
    else:
        members = _strata_members(strata, n)
        generators = [np.random.default_rng(child)
                      for child in np.random.SeedSequence(seed).spawn(len(members))]
    for b in range(resamples):
        idx = np.concatenate([m[rng.integers(0, m.shape[0], size=m.shape[0])]
                              for m, rng in zip(members, generators)])
        resampled = [a[idx] for a in items]
        for name, statistic in statistics.items():
            out[name][b] = statistic(*resampled)
    for name, stats in out.items():
        bad = int(np.count_nonzero(~np.isfinite(stats)))
        if bad:
            raise FeatkitError(f"{name} is undefined (NaN) on {bad} of {resamples} bootstrap "
                               f"resamples: a resample lacks the items it needs (e.g. both "
                               f"classes); resample within strata or score more items")
    return out


def bootstrap_statistics(arrays: Sequence[np.ndarray], statistics: Mapping[str, Statistic], *,
                         level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
                         strata: np.ndarray | None = None) -> dict[str, BootstrapInterval]:
    """Percentile bootstrap intervals of statistics recomputed on resampled items (see
    :func:`resample_statistics`); each ``estimate`` is the statistic of the items as given."""
    check_level(level)
    items, n = _item_arrays(arrays)
    draws = resample_statistics(items, statistics, resamples, seed, strata=strata)
    out = {}
    for name, statistic in statistics.items():
        low, high = percentile_interval(draws[name], level)
        out[name] = BootstrapInterval(float(statistic(*items)), low, high, float(level),
                                      int(resamples), int(seed), n)
    return out


def bootstrap_statistic(arrays: Sequence[np.ndarray], statistic: Statistic, *,
                        level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
                        strata: np.ndarray | None = None) -> BootstrapInterval:
    """The percentile bootstrap interval of one ``statistic`` of resampled items."""
    return bootstrap_statistics(arrays, {"statistic": statistic}, level=level,
                                resamples=resamples, seed=seed, strata=strata)["statistic"]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, level: float = LEVEL,
                     resamples: int = RESAMPLES, seed: int = 0) -> PairedComparison:
    """Interval and two-sided p-value of ``mean(a) - mean(b)`` for two systems scored on the
    same items (item i of ``a`` and of ``b`` is the same image or query): every resample draws
    the same items for both."""
    check_level(level)
    x, y = _scores(a, "scores of A"), _scores(b, "scores of B")
    if x.shape != y.shape:
        raise FeatkitError(f"paired scores need the same items: {x.shape[0]} vs {y.shape[0]}")
    diff = x.astype(np.float64) - y.astype(np.float64)
    observed = float(diff.mean())
    stats = resample_means(diff, resamples, seed)
    low, high = percentile_interval(stats, level)
    extreme = int(np.count_nonzero(np.abs(stats - observed) >= abs(observed) - 1e-15))
    pvalue = min(1.0, (1 + extreme) / (resamples + 1))
    return PairedComparison(float(x.mean(dtype=np.float64)), float(y.mean(dtype=np.float64)),
                            observed, low, high, pvalue, float(level), int(resamples), int(seed),
                            int(x.shape[0]))


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray, *, exact: bool = True
            ) -> McNemarResult:
    """McNemar's test of two classifiers' 0/1 correctness on the same items. ``exact``: the
    two-sided binomial test on the discordant pairs, ``min(1, 2 * Binom(n, 1/2).cdf(min(b, c)))``;
    else ``(|b - c| - 1)^2 / (b + c)`` against chi-square with 1 degree of freedom."""
    from scipy.stats import binom, chi2

    x = np.asarray(a_correct).astype(bool)
    y = np.asarray(b_correct).astype(bool)
    if x.shape != y.shape or x.ndim != 1:
        raise FeatkitError(f"McNemar needs 0/1 scores of the same items: shapes {x.shape}, "
                           f"{y.shape}")
    only_a = int(np.count_nonzero(x & ~y))
    only_b = int(np.count_nonzero(~x & y))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemarResult(only_a, only_b, 0.0, 1.0, exact)
    if exact:
        statistic = float(min(only_a, only_b))
        pvalue = min(1.0, 2.0 * float(binom.cdf(statistic, discordant, 0.5)))
    else:
        statistic = (abs(only_a - only_b) - 1.0) ** 2 / discordant
        pvalue = float(chi2.sf(statistic, 1))
    return McNemarResult(only_a, only_b, float(statistic), pvalue, exact)
