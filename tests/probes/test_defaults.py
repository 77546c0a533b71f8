"""One place for each default: the probe functions' keyword defaults are the constants of the
torch-free :mod:`probes.defaults`, which the task settings and the CLI read too."""

from __future__ import annotations

import inspect

from probes import defaults
from probes.knn import knn_probe, knn_scores, knn_votes, score_knn
from probes.linear import NORMALIZATIONS, fit_linear_probe, fit_logistic_regression
from probes.perturb import check_target, eps_sweep, pgd


def _defaults(fn) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_linear_probe_defaults():
    fit = _defaults(fit_linear_probe)
    assert fit["normalization"] == defaults.LINEAR_NORMALIZATION
    assert fit["refit_on_val"] is defaults.LINEAR_REFIT_ON_VAL
    assert (fit["tol"], fit["max_iter"]) == (defaults.LINEAR_TOL, defaults.LINEAR_MAX_ITER)
    single = _defaults(fit_logistic_regression)
    assert (single["tol"], single["max_iter"]) == (defaults.LINEAR_TOL, defaults.LINEAR_MAX_ITER)
    assert NORMALIZATIONS is defaults.NORMALIZATIONS


def test_knn_defaults():
    assert _defaults(knn_probe)["ks"] == defaults.KNN_KS
    for fn in (knn_probe, knn_scores, knn_votes, score_knn):
        assert _defaults(fn)["temperature"] == defaults.KNN_TEMPERATURE


def test_pgd_defaults():
    for fn in (pgd, eps_sweep):
        got = _defaults(fn)
        assert (got["steps"], got["norm"]) == (defaults.PGD_STEPS, defaults.PGD_NORM)
    assert _defaults(eps_sweep)["target"] == defaults.PGD_TARGET == check_target(None)
