"""Bootstrap intervals over per-item scores, the paired bootstrap and McNemar's test."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.bootstrap import (
    bootstrap_mean,
    mcnemar,
    paired_bootstrap,
    percentile_interval,
    resample_means,
    resample_means_shared,
)


def _naive(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The loop the module docstring defines, written out."""
    rng = np.random.default_rng(seed)
    n = len(values)
    return np.array([values[rng.integers(0, n, size=n)].mean() for _ in range(resamples)])


@pytest.mark.parametrize("binary", [True, False])
def test_resampling_matches_the_naive_loop_with_the_same_seed(binary, monkeypatch):
    rng = np.random.default_rng(3)
    values = rng.random(257) < 0.6 if binary else rng.random(257)
    import probes.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "_BLOCK_DRAWS", 1000)  # several blocks of resamples
    got = resample_means(values, 50, seed=11)
    want = _naive(values.astype(np.float64), 50, 11)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    interval = bootstrap_mean(values, resamples=50, seed=11)
    assert (interval.low, interval.high) == pytest.approx(
        tuple(np.percentile(want, [2.5, 97.5])), abs=1e-12)


def test_strata_are_resampled_separately_from_spawned_generators():
    rng = np.random.default_rng(0)
    a, b = rng.random(40) < 0.5, rng.random(25) < 0.9
    got = resample_means(np.concatenate([a, b]), 30, seed=4, strata=[40, 25])
    children = np.random.SeedSequence(4).spawn(2)
    want = (_naive(a.astype(float), 30, children[0]) * 40
            + _naive(b.astype(float), 30, children[1]) * 25) / 65
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(FeatkitError, match="add up"):
        resample_means(np.concatenate([a, b]), 5, strata=[40, 20])


def test_the_interval_covers_the_estimate_and_shrinks_as_n_grows():
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1_000, 10_000):
        values = rng.random(n) < 0.7
        interval = bootstrap_mean(values, resamples=400, seed=0)
        assert interval.low <= interval.estimate <= interval.high
        assert interval.estimate == pytest.approx(values.mean())
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    # roughly the normal-theory width 2 * 1.96 * sqrt(p (1 - p) / n)
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 10_000), rel=0.2)


def test_percentile_interval_and_bad_inputs():
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    with pytest.raises(FeatkitError, match="strictly between"):
        bootstrap_mean(np.ones(3), level=1.0)
    with pytest.raises(FeatkitError, match="positive integer"):
        bootstrap_mean(np.ones(3), resamples=0)
    with pytest.raises(FeatkitError, match="no items"):
        bootstrap_mean(np.array([]))
    with pytest.raises(FeatkitError, match="NaN"):
        bootstrap_mean(np.array([0.5, np.nan]))


def test_the_paired_test_is_zero_difference_on_identical_inputs():
    values = np.random.default_rng(2).random(500) < 0.8
    result = paired_bootstrap(values, values.copy(), resamples=200, seed=5)
    assert result.difference == 0.0
    assert (result.low, result.high) == (0.0, 0.0)
    assert result.pvalue == 1.0
    exact = mcnemar(values, values)
    assert (exact.only_a, exact.only_b, exact.pvalue) == (0, 0, 1.0)


def test_the_paired_bootstrap_resamples_the_same_items_for_both():
    rng = np.random.default_rng(7)
    a = rng.random(300) < 0.8
    b = a.copy()
    b[:30] = ~b[:30]  # B differs on 30 items
    result = paired_bootstrap(a, b, resamples=300, seed=1)
    want = _naive((a.astype(float) - b.astype(float)), 300, 1)
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(want, [2.5, 97.5])))
    assert result.difference == pytest.approx(a.mean() - b.mean())
    clear = paired_bootstrap(np.ones(400, bool), np.r_[np.ones(300, bool), np.zeros(100, bool)],
                             resamples=500, seed=0)
    assert clear.pvalue == pytest.approx(1 / 501)
    assert clear.low > 0


def test_mcnemar_matches_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    rng = np.random.default_rng(4)
    a = rng.random(200) < 0.75
    b = np.where(rng.random(200) < 0.15, ~a, a)
    both = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    for exact in (True, False):
        ours = mcnemar(a, b, exact=exact)
        ref = sm_mcnemar(both, exact=exact, correction=True)
        assert ours.statistic == pytest.approx(ref.statistic)
        assert ours.pvalue == pytest.approx(ref.pvalue)
    assert (ours.only_a, ours.only_b) == (both[0, 1], both[1, 0])


def test_shared_draws_equal_each_system_resampled_alone():
    rng = np.random.default_rng(8)
    scores = np.stack([rng.random(120) < p for p in (0.3, 0.6, 0.9)], axis=1).astype(float)
    shared = resample_means_shared(scores, 40, seed=6)
    for j in range(3):
        np.testing.assert_allclose(shared[:, j], resample_means(scores[:, j], 40, seed=6),
                                   atol=1e-12)
