"""Linear probe: multinomial logistic regression by full-batch L-BFGS in torch, an L2-strength
sweep scored on a validation split, one refit, and one final score on test.

Split along its jobs: :mod:`probes.linear.head` (the saved :class:`LinearProbe` and its autograd
ops), :mod:`probes.linear.solver` (the L-BFGS solver in scikit-learn's convention) and
:mod:`probes.linear.protocol` (C grid, sweep, refit, evaluation). The defaults shared with the CLI live in
:mod:`probes.defaults`. Every public name is importable from ``probes.linear``.
"""

from __future__ import annotations

from probes.defaults import NORMALIZATIONS
from probes.linear.head import LinearProbe
from probes.linear.protocol import (
    LINEAR_DTYPE,
    LINEAR_SEED,
    SELECTION_RULE,
    UNIT_NORM_C_GRID,
    LinearProbeFit,
    LinearProbeResult,
    SweepPoint,
    default_c_grid,
    evaluate_linear_probe,
    fit_linear_probe,
    linear_probe,
)
from probes.linear.solver import (
    LBFGS_CHUNK_ROWS,
    LBFGS_HISTORY_SIZE,
    LogisticFit,
    fit_logistic_regression,
    regularized_loss,
)

__all__ = [
    "LBFGS_CHUNK_ROWS",
    "LBFGS_HISTORY_SIZE",
    "LINEAR_DTYPE",
    "LINEAR_SEED",
    "NORMALIZATIONS",
    "SELECTION_RULE",
    "UNIT_NORM_C_GRID",
    "LinearProbe",
    "LinearProbeFit",
    "LinearProbeResult",
    "LogisticFit",
    "SweepPoint",
    "default_c_grid",
    "evaluate_linear_probe",
    "fit_linear_probe",
    "fit_logistic_regression",
    "linear_probe",
    "regularized_loss",
]
