"""The linear probe says what a reader must know: C at a grid edge, fits that hit max_iter,
a validation split too thin to choose C on (issue 15, item 7)."""

from __future__ import annotations

import numpy as np

from probes.linear import fit_linear_probe
from probes.linear.protocol import MIN_VAL_PER_CLASS, SweepPoint, fit_warnings


def _blobs(n_per_class, classes=3, d=4, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return (centres[y] + spread * rng.normal(size=(len(y), d))).astype(np.float32), y


def _points(cs, converged=True):
    return [SweepPoint(c, 0.5, 3, converged) for c in cs]


def test_edges_of_the_grid():
    y = np.repeat(np.arange(3), 6)
    names = ("a", "b", "c")
    assert "largest value of the grid [0.1, 10]" in fit_warnings(
        [0.1, 1, 10], 10, _points([0.1, 1, 10]), True, True, 100, y, names)[0]
    assert "smallest value" in fit_warnings(
        [0.1, 1, 10], 0.1, _points([0.1, 1, 10]), True, True, 100, y, names)[0]
    assert fit_warnings([0.1, 1, 10], 1, _points([0.1, 1, 10]), True, True, 100, y, names) == ()
    # a one-value grid has no edge to speak of
    assert fit_warnings([1.0], 1.0, _points([1.0]), True, True, 100, y, names) == ()


def test_thin_or_missing_val_classes():
    names = ("a", "b", "c")
    y = np.array([0] * 6 + [1] * 2)
    warnings = fit_warnings([1, 10, 100], 10, _points([1, 10, 100]), True, True, 100, y, names)
    assert len(warnings) == 2
    assert "no samples of 1 of 3 classes (c)" in warnings[0]
    assert f"fewer than {MIN_VAL_PER_CLASS} samples in 1 of 3 classes (fewest: 2)" in warnings[1]


def test_a_fit_that_hits_max_iter_says_so():
    x, y = _blobs(20)
    vx, vy = _blobs(6, seed=1)
    fit = fit_linear_probe(x, y, vx, vy, c_grid=[0.01, 1e4, 1e5], max_iter=2, progress=False)
    stopped = [p for p in fit.sweep if not p.converged]
    assert stopped
    assert any(f"stopped at max_iter = 2 before tol in {len(stopped)} of 3" in w
               for w in fit.warnings)
    assert any("refit on train + val" in w for w in fit.warnings) == (not fit.refit_converged)
    converged = fit_linear_probe(x, y, vx, vy, c_grid=[0.1, 1, 10], progress=False)
    assert not any("max_iter" in w for w in converged.warnings)
