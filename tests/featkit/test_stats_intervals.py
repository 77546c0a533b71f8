"""Bootstrap intervals of an effective-robustness fit (featkit.stats.robustness_intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from featkit.stats import (
    effective_robustness,
    fit_robustness_line,
    robustness_intervals,
    transform_accuracy,
)

REF = np.array([0.6, 0.7, 0.75, 0.8, 0.85])
SHIFTED = np.array([0.3, 0.4, 0.47, 0.5, 0.62])
BASE = np.array([True, True, True, True, False])


def _draws(values, n_items, resamples, seed):
    rng = np.random.default_rng(seed)
    return rng.binomial(n_items, values, size=(resamples, len(values))) / n_items


def test_draws_without_noise_collapse_onto_the_fit():
    fixed = robustness_intervals(np.tile(REF, (20, 1)), np.tile(SHIFTED, (20, 1)), BASE)
    slope, intercept = fit_robustness_line(REF[BASE], SHIFTED[BASE])
    assert fixed.slope == pytest.approx((slope, slope))
    assert fixed.intercept == pytest.approx((intercept, intercept))
    er = effective_robustness(REF, SHIFTED, slope, intercept)
    np.testing.assert_allclose(fixed.effective_robustness, np.stack([er, er], axis=1))


def test_refits_match_a_loop_and_the_band_holds_the_line():
    ref, shifted = _draws(REF, 2000, 300, 0), _draws(SHIFTED, 2000, 300, 1)
    result = robustness_intervals(ref, shifted, BASE, level=0.9)
    loop = [np.polyfit(transform_accuracy(r[BASE]), transform_accuracy(s[BASE]), 1)
            for r, s in zip(ref, shifted)]
    np.testing.assert_allclose(result.slopes, [p[0] for p in loop], rtol=1e-9)
    np.testing.assert_allclose(result.intercepts, [p[1] for p in loop], rtol=1e-9)
    slope, intercept = fit_robustness_line(REF[BASE], SHIFTED[BASE])
    grid = np.linspace(0.0, 1.2, 7)
    low, high = result.band(grid)
    line = slope * grid + intercept
    assert (low <= line).all() and (line <= high).all() and (high - low > 0).all()
    er = effective_robustness(REF, SHIFTED, slope, intercept)
    assert (result.effective_robustness[:, 0] <= er).all()
    assert (er <= result.effective_robustness[:, 1]).all()
    assert (result.ref[:, 0] <= REF).all() and (REF <= result.ref[:, 1]).all()
    more = robustness_intervals(_draws(REF, 20000, 300, 0), _draws(SHIFTED, 20000, 300, 1), BASE,
                                level=0.9)
    widths = np.diff(result.effective_robustness, axis=1)
    assert (np.diff(more.effective_robustness, axis=1) < widths).all()  # more items, narrower


def test_a_baseline_that_cannot_be_refitted_is_refused():
    flat = np.full((5, 5), 0.7)
    with pytest.raises(FeatkitError, match="cannot be refitted"):
        robustness_intervals(flat, flat, BASE)
