"""Rank tests and robustness fits: the statistics a report prints and its figures draw.

Pure functions over arrays and tables (no figures, no files), so that both
:mod:`featkit.reporting` and :mod:`featkit.plots` import them and neither imports the other.

Rank tests (reference.md §2): Friedman via :func:`scipy.stats.friedmanchisquare`; Nemenyi
p-values via scikit-posthocs' ``posthoc_nemenyi_friedman``; the critical difference by the
formula ``CD = q_a * sqrt(k (k + 1) / (6 N))`` with ``q_a = studentized_range.ppf(1 - a, k, inf)
/ sqrt(2)`` (Demšar 2006). Effective robustness: OLS of probit- (or logit-) transformed shifted
accuracy on transformed reference accuracy over the baseline models; a model's effective
robustness is ``acc_shifted - inv(slope * t(acc_ref) + intercept)`` in accuracy points. Its
intervals (:func:`robustness_intervals`) come from a bootstrap over test items: every resample
redraws each system's accuracies from its per-item scores and refits the line, which gives the
line's confidence band, the slope's and intercept's intervals and each effective robustness's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError

if TYPE_CHECKING:
    import pandas as pd

#: The accuracy transforms of an effective-robustness fit.
TRANSFORMS = ("probit", "logit")

#: Accuracies are clipped to [CLIP_EPS, 1 - CLIP_EPS] before the probit/logit transform.
CLIP_EPS = 1e-4

#: Friedman's test needs at least three systems (scipy) and we ask for at least two datasets.
MIN_SYSTEMS_FOR_RANKS = 3
MIN_DATASETS_FOR_RANKS = 2

#: Significance level of the Nemenyi post-hoc test unless one is given.
ALPHA = 0.05


def check_transform(transform: str) -> None:
    """Refuse an unknown transform with a one-line error naming the known ones."""
    if transform not in TRANSFORMS:
        raise FeatkitError(
            f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")


# --------------------------------------------------------------------------- rank tests


def nemenyi_q_alpha(k: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical value q_a = studentized_range.ppf(1 - a, k, inf) / sqrt(2)."""
    from scipy.stats import studentized_range

    if k < 2:
        raise FeatkitError(f"the Nemenyi test compares at least 2 systems, got {k}")
    return float(studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0))


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of mean ranks: ``q_a * sqrt(k (k + 1) / (6 N))`` for k
    systems compared on N datasets (Demšar 2006)."""
    if n < 1:
        raise FeatkitError(f"the critical difference needs at least one dataset, got {n}")
    return nemenyi_q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def mean_ranks(values: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank of each column over the rows (1 = best; ties share the average rank)."""
    import pandas as pd
    from scipy.stats import rankdata

    data = values.to_numpy(dtype=float)
    ranks = rankdata(-data if higher_is_better else data, axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=values.columns, name="mean_rank")


def nonsignificant_groups(pvalues: pd.DataFrame, alpha: float = ALPHA) -> list[tuple[str, ...]]:
    """Maximal groups of systems whose pairwise p-values are all >= alpha (the cliques a CD
    diagram joins with a bar), each ordered as in ``pvalues``; singletons are left out."""
    names = list(pvalues.index)
    linked = {a: {b for b in names if b != a and pvalues.loc[a, b] >= alpha} for a in names}
    cliques: list[set[str]] = []

    def expand(current: set[str], candidates: set[str], excluded: set[str]) -> None:
        if not candidates and not excluded:
            cliques.append(current)
            return
        for name in [n for n in names if n in candidates]:
            expand(current | {name}, candidates & linked[name], excluded & linked[name])
            candidates = candidates - {name}
            excluded = excluded | {name}

    expand(set(), set(names), set())
    groups = [tuple(n for n in names if n in c) for c in cliques if len(c) > 1]
    return sorted(groups, key=lambda g: [names.index(n) for n in g])


@dataclass(frozen=True)
class RankTest:
    """Friedman test + Nemenyi post-hoc comparison of k systems over N datasets."""

    task: str
    metric: str
    values: pd.DataFrame  # N datasets x k systems (fractions)
    mean_ranks: pd.Series  # per system, 1 = best
    statistic: float  # Friedman chi-square
    pvalue: float  # Friedman p-value
    pvalues: pd.DataFrame  # Nemenyi pairwise p-values, k x k
    cd: float
    q_alpha: float
    alpha: float
    groups: tuple[tuple[str, ...], ...]  # maximal non-significant groups
    dropped_datasets: tuple[str, ...] = ()

    @property
    def k(self) -> int:
        """Number of systems compared."""
        return int(self.values.shape[1])

    @property
    def n(self) -> int:
        """Number of datasets (blocks) they were compared on."""
        return int(self.values.shape[0])

    def summary(self) -> str:
        """One line: test, p-value, k, N, CD."""
        return (
            f"{self.task} {self.metric}: Friedman chi2 = {self.statistic:.4g}, "
            f"p = {self.pvalue:.4g} (k = {self.k} systems, N = {self.n} datasets); "
            f"Nemenyi CD (alpha = {self.alpha:g}) = {self.cd:.4f}"
        )


def friedman_nemenyi(
    values: pd.DataFrame,
    *,
    alpha: float = ALPHA,
    task: str = "",
    metric: str = "",
    higher_is_better: bool = True,
) -> RankTest:
    """Friedman's test and the Nemenyi post-hoc test over a complete N datasets x k systems
    table (rows = blocks). Needs k >= 3 and N >= 2."""
    import scikit_posthocs
    from scipy.stats import friedmanchisquare

    if values.isna().any().any():
        raise FeatkitError("the rank tests need a complete table; drop datasets with gaps first")
    n, k = values.shape
    if k < MIN_SYSTEMS_FOR_RANKS or n < MIN_DATASETS_FOR_RANKS:
        raise FeatkitError(
            f"Friedman's test needs >= {MIN_SYSTEMS_FOR_RANKS} systems on >= "
            f"{MIN_DATASETS_FOR_RANKS} datasets; got {k} on {n}"
        )
    data = values.to_numpy(dtype=float)
    if (data == data[:, :1]).all():
        statistic, pvalue = 0.0, 1.0  # every dataset ties every system: no evidence at all
    else:
        statistic, pvalue = friedmanchisquare(*data.T)
    pvalues = scikit_posthocs.posthoc_nemenyi_friedman(data)
    pvalues.index = pvalues.columns = list(values.columns)
    ranks = mean_ranks(values, higher_is_better)
    return RankTest(
        task=task,
        metric=metric,
        values=values,
        mean_ranks=ranks,
        statistic=float(statistic),
        pvalue=float(pvalue),
        pvalues=pvalues,
        cd=critical_difference(k, n, alpha),
        q_alpha=nemenyi_q_alpha(k, alpha),
        alpha=alpha,
        groups=tuple(nonsignificant_groups(pvalues, alpha)),
    )


# --------------------------------------------------------------------------- robustness fits


def transform_accuracy(acc: Any, transform: str = "probit", clip: float = CLIP_EPS) -> np.ndarray:
    """Probit (``norm.ppf``) or logit of accuracies clipped to ``[clip, 1 - clip]``."""
    from scipy.special import logit
    from scipy.stats import norm

    check_transform(transform)
    a = np.clip(np.asarray(acc, dtype=float), clip, 1.0 - clip)
    return norm.ppf(a) if transform == "probit" else logit(a)


def inverse_transform(z: Any, transform: str = "probit") -> np.ndarray:
    """Accuracy from a transformed value (``norm.cdf`` or ``expit``)."""
    from scipy.special import expit
    from scipy.stats import norm

    check_transform(transform)
    z = np.asarray(z, dtype=float)
    return norm.cdf(z) if transform == "probit" else expit(z)


def fit_robustness_line(acc_ref: Any, acc_shifted: Any, transform: str = "probit",
                        clip: float = CLIP_EPS) -> tuple[float, float]:
    """OLS ``t(acc_shifted) = slope * t(acc_ref) + intercept`` over baseline models."""
    x = transform_accuracy(acc_ref, transform, clip)
    y = transform_accuracy(acc_shifted, transform, clip)
    if x.size < 2 or np.ptp(x) == 0:
        raise FeatkitError(
            "the robustness line needs >= 2 baseline models with different reference accuracies"
        )
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def effective_robustness(acc_ref: Any, acc_shifted: Any, slope: float, intercept: float,
                         transform: str = "probit", clip: float = CLIP_EPS) -> np.ndarray:
    """``acc_shifted - inv(slope * t(acc_ref) + intercept)`` in accuracy points (x 100)."""
    predicted = inverse_transform(slope * transform_accuracy(acc_ref, transform, clip)
                                  + intercept, transform)
    return 100.0 * (np.asarray(acc_shifted, dtype=float) - predicted)


@dataclass(frozen=True)
class RobustnessFit:
    """The baseline line of one distribution shift and every system's effective robustness.

    ``points``: system, ref, shifted (fractions), predicted (fraction on the line),
    effective_robustness (accuracy points), baseline (bool); with ``intervals`` (bootstrap over
    test items, :func:`robustness_intervals`) also ``ref_low/high``, ``shifted_low/high``
    (fractions) and ``er_low/high`` (points)."""

    reference: str
    shifted: str
    task: str
    metric: str
    transform: str
    slope: float
    intercept: float
    points: pd.DataFrame
    clip: float = CLIP_EPS
    intervals: RobustnessIntervals | None = None

    def predict(self, acc_ref: Any) -> np.ndarray:
        """The shifted accuracy the baseline line predicts for a reference accuracy."""
        return inverse_transform(self.slope * transform_accuracy(acc_ref, self.transform,
                                                                 self.clip) + self.intercept,
                                 self.transform)

    def summary(self) -> str:
        """One line: the fitted line and how many baseline models it rests on."""
        n_base = int(self.points["baseline"].sum())
        return (
            f"{self.reference} -> {self.shifted} ({self.task} {self.metric}, {self.transform}): "
            f"t(shifted) = {self.slope:.4f} t(ref) {self.intercept:+.4f} over {n_base} baseline "
            "model(s)"
        )



@dataclass(frozen=True)
class RobustnessIntervals:
    """Percentile bootstrap intervals of an effective-robustness fit over test items.

    Each resample redraws every system's reference and shifted accuracy from its per-item
    scores (the same items for every system, so the draws are paired across systems), refits
    the baseline line and recomputes every effective robustness. ``slopes``/``intercepts``
    hold the refitted lines (resamples whose baseline had one distinct reference accuracy are
    dropped, ``used`` counts the rest); ``ref``, ``shifted`` (fractions) and
    ``effective_robustness`` (points) are ``n_systems x 2`` (low, high)."""

    level: float
    resamples: int
    seed: int
    slopes: np.ndarray
    intercepts: np.ndarray
    ref: np.ndarray
    shifted: np.ndarray
    effective_robustness: np.ndarray

    @property
    def used(self) -> int:
        return int(self.slopes.shape[0])

    def _bounds(self, values: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(values, [50.0 * (1 - self.level), 50.0 * (1 + self.level)])
        return float(low), float(high)

    @property
    def slope(self) -> tuple[float, float]:
        return self._bounds(self.slopes)

    @property
    def intercept(self) -> tuple[float, float]:
        return self._bounds(self.intercepts)

    def band(self, grid: Any) -> tuple[np.ndarray, np.ndarray]:
        """The confidence band of the line on the transformed scale at ``grid`` (transformed
        reference accuracies): percentiles of the refitted lines at each point."""
        grid = np.asarray(grid, dtype=float)
        lines = self.slopes[:, None] * grid[None, :] + self.intercepts[:, None]
        low, high = np.percentile(lines, [50.0 * (1 - self.level), 50.0 * (1 + self.level)],
                                  axis=0)
        return low, high


def robustness_intervals(ref_draws: Any, shifted_draws: Any, baseline: Any, *,
                         transform: str = "probit", clip: float = CLIP_EPS,
                         level: float = 0.95, seed: int = 0) -> RobustnessIntervals:
    """Intervals of a robustness fit from resampled accuracies: ``ref_draws`` and
    ``shifted_draws`` are ``resamples x n_systems`` (fractions), ``baseline`` marks the systems
    the line is fitted on. The line is refitted by OLS on every resample."""
    ref = np.asarray(ref_draws, dtype=float)
    shifted = np.asarray(shifted_draws, dtype=float)
    base = np.asarray(baseline, dtype=bool)
    if ref.shape != shifted.shape or ref.ndim != 2 or ref.shape[1] != base.shape[0]:
        raise FeatkitError(f"draws must be resamples x systems, got {ref.shape} and "
                           f"{shifted.shape} for {base.shape[0]} systems")
    tx, ty = transform_accuracy(ref, transform, clip), transform_accuracy(shifted, transform, clip)
    x, y = tx[:, base], ty[:, base]
    dx = x - x.mean(axis=1, keepdims=True)
    sxx = (dx * dx).sum(axis=1)
    keep = sxx > 0
    slopes = (dx * (y - y.mean(axis=1, keepdims=True))).sum(axis=1)[keep] / sxx[keep]
    intercepts = y.mean(axis=1)[keep] - slopes * x.mean(axis=1)[keep]
    if not keep.any():
        raise FeatkitError("no resample has baseline systems with different reference "
                           "accuracies; the line cannot be refitted")
    predicted = inverse_transform(slopes[:, None] * tx[keep] + intercepts[:, None], transform)
    er = 100.0 * (shifted[keep] - predicted)
    q = [50.0 * (1 - level), 50.0 * (1 + level)]

    def bounds(values: np.ndarray) -> np.ndarray:
        return np.percentile(values, q, axis=0).T

    return RobustnessIntervals(float(level), int(ref.shape[0]), int(seed), slopes, intercepts,
                               bounds(ref), bounds(shifted), bounds(er))
