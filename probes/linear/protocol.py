"""The linear-probe protocol: an L2-strength sweep scored on a validation split, one refit, and
one final score on test.

Test labels cannot reach model selection: :func:`fit_linear_probe` takes no test data at all;
:func:`evaluate_linear_probe` scores the fitted probe on test once, afterwards. The defaults of
the protocol come from :mod:`probes.defaults` (torch-free, so the CLI reads them too), and the
few that only the probe functions state (the selection rule, the C grid) are here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from featkit._device import torch_device
from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes._dtype import resolve_dtype
from probes._progress import progress_bar
from probes.classification import ClassificationMetrics, score_classification
from probes.defaults import (
    LINEAR_DTYPE,
    LINEAR_MAX_ITER,
    LINEAR_NORMALIZATION,
    LINEAR_REFIT_ON_VAL,
    LINEAR_SEED,
    LINEAR_TOL,
)
from probes.linear.head import LinearProbe, normalization_stats, normalize_tensor
from probes.linear.solver import (
    LBFGS_CHUNK_ROWS,
    LBFGS_HISTORY_SIZE,
    LbfgsHistory,
    Objective,
    augment,
    check_labels,
    lbfgs,
)

#: How C is chosen from the sweep, as the settings record it.
SELECTION_RULE = "val top1 (ties -> smaller C)"

#: Default C grid for unit-norm features (see :func:`default_c_grid`).
UNIT_NORM_C_GRID = tuple(float(c) for c in 10.0 ** np.linspace(-2.0, 5.0, 15))


def default_c_grid(mean_squared_norm: float = 1.0) -> tuple[float, ...]:
    """15 values 10^-2 .. 10^5 (half-decade steps) for unit-norm features, divided by the mean
    squared feature norm otherwise.

    Why this range: with the summed loss, ``C`` trades ``||W||^2 / 2C`` against a CE that grows
    with n. On unit-norm features C = 10^-2 is so strongly regularised that the weights are
    close to (scaled) centred class means, i.e. a nearest-class-mean classifier with
    near-uniform probabilities, and at C = 10^5 the penalty is negligible for train sets of
    10^3 - 10^5 images (the fit is then limited by ``tol``, not by C). Half-decade steps are
    fine enough that neighbouring C values rarely differ by more than a point of val top-1.
    Scaling features by s is equivalent to scaling C by s^2, hence the division.
    """
    scale = 1.0 / mean_squared_norm if mean_squared_norm > 0 else 1.0
    return tuple(float(c * scale) for c in UNIT_NORM_C_GRID)


@dataclass(frozen=True)
class SweepPoint:
    """Validation score of the train-only fit at one ``C``."""

    C: float
    val_top1: float
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class LinearProbeFit:
    """Everything decided without test data: the trained probe, the chosen ``C`` and the
    sweep curve. Score it with :func:`evaluate_linear_probe`."""

    probe: LinearProbe
    C: float
    sweep: tuple[SweepPoint, ...]
    normalization: str
    refit_on_val: bool
    tol: float
    max_iter: int
    dtype: str
    seed: int
    n_train: int
    n_val: int
    refit_n_iter: int
    refit_converged: bool
    warnings: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """The record's ``settings``: the chosen C, the grid and every knob of the fit."""
        return {
            "C": self.C,
            "normalization": self.normalization,
            "c_grid": [p.C for p in self.sweep],
            "selection": SELECTION_RULE,
            "refit_on_val": self.refit_on_val,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "dtype": self.dtype,
            "seed": self.seed,
            "n_train": self.n_train,
            "n_val": self.n_val,
        }

    def sweep_curve(self) -> list[dict[str, float]]:
        """Val top-1 at each C of the sweep, ascending in C."""
        return [{"C": p.C, "val_top1": p.val_top1} for p in self.sweep]


def fit_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    normalization: str = LINEAR_NORMALIZATION,
    c_grid: Sequence[float] | None = None,
    refit_on_val: bool = LINEAR_REFIT_ON_VAL,
    tol: float = LINEAR_TOL,
    max_iter: int = LINEAR_MAX_ITER,
    history_size: int = LBFGS_HISTORY_SIZE,
    dtype: str = LINEAR_DTYPE,
    device: str | torch.device | None = None,
    seed: int = LINEAR_SEED,
    chunk_rows: int = LBFGS_CHUNK_ROWS,
    progress: bool = True,
) -> LinearProbeFit:
    """Sweep ``C`` on train (ascending; each fit starts from the previous solution or its
    extrapolation along the path, and keeps the L-BFGS history), pick the best val
    top-1 (ties -> the smaller C, i.e. stronger regularisation), then refit at that C on
    train + val (``refit_on_val=True``, the default, as DINOv2 does) or keep the train fit.

    ``normalization``: ``"l2"`` (default), ``"standardize"`` (train mean/std) or ``"none"``;
    it is stored in the probe. ``c_grid`` defaults to :func:`default_c_grid` scaled to the
    normalised train features. ``dtype="float32"`` is the fast path; the solver's sums and
    curvature history run in float64 either way. No test data goes in: see
    :func:`evaluate_linear_probe`.

    ``tol`` defaults to 1e-6, not scikit-learn's 1e-4: on CUB-sized synthetic features tol=1e-4
    stopped 6 points of test top-1 short of the optimum at C = 300 (1e-5: 0.3 points, 1e-6:
    exact to 0.01). Nothing is random (zero start, full-batch L-BFGS): the same inputs on the
    same device and thread count give bitwise the same probe; ``seed`` is only recorded.
    """
    dev, dt = torch_device(device), resolve_dtype(dtype)
    train_x = np.asarray(train_features, dtype=np.float32)
    val_x = np.asarray(val_features, dtype=np.float32)
    if train_x.ndim != 2 or val_x.ndim != 2 or train_x.shape[1] != val_x.shape[1]:
        raise FeatkitError(
            f"train and val features must be 2-D with the same width; got {train_x.shape} "
            f"and {val_x.shape}"
        )
    check_finite(train_x, "train features")
    check_finite(val_x, "val features")
    if len(val_x) == 0:
        raise FeatkitError("the validation split is empty; C cannot be selected without it")
    n_classes = len(class_names) if class_names is not None else int(max(
        np.max(train_labels), np.max(val_labels)) + 1)
    names = tuple(class_names) if class_names is not None else tuple(map(str, range(n_classes)))
    train_y = check_labels(train_labels, n_classes, "train")
    val_y = check_labels(val_labels, n_classes, "val")
    absent = np.flatnonzero(np.bincount(train_y, minlength=n_classes) == 0)
    if absent.size:
        shown = ", ".join(names[i] for i in absent[:5]) + (" ..." if absent.size > 5 else "")
        raise FeatkitError(
            f"{absent.size} class(es) have no training samples ({shown}); a logistic "
            "regression cannot learn them: drop or merge them (--label-map)"
        )

    mean, std = normalization_stats(train_x, normalization)
    t_mean = None if mean is None else torch.as_tensor(mean, device=dev, dtype=dt)
    t_std = None if std is None else torch.as_tensor(std, device=dev, dtype=dt)

    def prepare(x: np.ndarray) -> torch.Tensor:
        xt = torch.as_tensor(x, device=dev, dtype=dt)
        return augment(normalize_tensor(xt, normalization, t_mean, t_std))

    train_aug, val_aug = prepare(train_x), prepare(val_x)
    if c_grid is None:
        mean_sq = float((train_aug[:, :-1].double() ** 2).sum(dim=1).mean())
        c_grid = default_c_grid(mean_sq)
    grid = sorted({float(c) for c in c_grid})
    if not grid or grid[0] <= 0:
        raise FeatkitError(f"the C grid must hold positive values; got {list(c_grid)}")

    objective = Objective(train_aug, torch.as_tensor(train_y, device=dev), n_classes, chunk_rows)
    history = LbfgsHistory(history_size)
    theta = torch.zeros(n_classes, train_x.shape[1] + 1, device=dev, dtype=dt)
    n_train = len(train_y)
    sweep: list[SweepPoint] = []
    best: tuple[float, float, torch.Tensor] | None = None  # (val_top1, C, theta)
    previous: tuple[float, torch.Tensor] | None = None  # (log C, solution) one step back
    previous_lam = None
    bar = progress_bar(grid, progress, "C sweep")
    for C in bar:
        lam = 1.0 / (C * n_train)
        start, initial = theta, objective(theta, lam)
        if previous_lam is not None:
            history.shift_penalty(lam - previous_lam, tuple(theta.shape))
        if previous is not None:
            # follow the regularisation path: extrapolate the last two solutions linearly in
            # log C, and start there if that is better than the last solution
            last_log_c = math.log(sweep[-1].C)
            ratio = min(2.0, (math.log(C) - last_log_c) / (last_log_c - previous[0]))
            guess = theta.add(theta - previous[1], alpha=ratio)
            guess_eval = objective(guess, lam)
            if guess_eval[0] < initial[0]:
                start, initial = guess, guess_eval
        solution, info = lbfgs(objective, start, lam, history, tol=tol, max_iter=max_iter,
                                initial=initial)
        if sweep:
            previous = (math.log(sweep[-1].C), theta)
        theta, previous_lam = solution, lam
        with torch.no_grad():
            val_pred = (val_aug @ theta.T).argmax(dim=1).cpu().numpy()
        val_top1 = float(np.mean(val_pred == val_y))
        sweep.append(SweepPoint(C, val_top1, info.n_iter, info.converged))
        if best is None or val_top1 > best[0]:
            best = (val_top1, C, theta.clone())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(C=f"{C:.3g}", val_top1=f"{val_top1:.4f}", iters=info.n_iter)
    assert best is not None
    _, best_c, best_theta = best

    refit_iter, refit_converged = 0, True
    if refit_on_val:
        both = torch.cat([train_aug, val_aug])
        labels_both = torch.as_tensor(np.concatenate([train_y, val_y]), device=dev)
        refit_objective = Objective(both, labels_both, n_classes, chunk_rows)
        lam = 1.0 / (best_c * len(labels_both))
        best_theta, info = lbfgs(
            refit_objective, best_theta, lam, LbfgsHistory(history_size), tol=tol,
            max_iter=max_iter,
        )
        refit_iter, refit_converged = info.n_iter, info.converged
    else:
        chosen = next(p for p in sweep if p.C == best_c)
        refit_iter, refit_converged = chosen.n_iter, chosen.converged

    warnings = fit_warnings(grid, best_c, sweep, refit_on_val, refit_converged, max_iter,
                            val_y, names)
    params = best_theta.to(torch.float32).cpu().numpy()
    probe = LinearProbe(
        weight=np.ascontiguousarray(params[:, :-1]),
        bias=np.ascontiguousarray(params[:, -1]),
        class_names=names,
        normalization=normalization,
        mean=mean,
        std=std,
        C=best_c,
    )
    return LinearProbeFit(
        probe=probe,
        C=best_c,
        sweep=tuple(sweep),
        normalization=normalization,
        refit_on_val=refit_on_val,
        tol=tol,
        max_iter=max_iter,
        dtype=str(dt).replace("torch.", ""),
        seed=seed,
        n_train=n_train,
        n_val=len(val_y),
        refit_n_iter=refit_iter,
        refit_converged=refit_converged,
        warnings=warnings,
    )


#: Fewer validation samples than this in a class make the choice of C noisy.
MIN_VAL_PER_CLASS = 5


def fit_warnings(grid: Sequence[float], chosen: float, sweep: Sequence[SweepPoint],
                 refit_on_val: bool, refit_converged: bool, max_iter: int,
                 val_labels: np.ndarray, class_names: Sequence[str]) -> tuple[str, ...]:
    """What a reader of the result must know: a C at the edge of its grid, fits that stopped
    at ``max_iter`` before ``tol``, and a validation split too thin to choose C on."""
    warnings = []
    if len(grid) > 1 and chosen in (grid[0], grid[-1]):
        edge = "largest" if chosen == grid[-1] else "smallest"
        warnings.append(f"the chosen C = {chosen:.4g} is the {edge} value of the grid "
                        f"[{grid[0]:.4g}, {grid[-1]:.4g}]: the best C may lie outside it; "
                        f"widen --c-grid")
    stopped = [p.C for p in sweep if not p.converged]
    if stopped:
        warnings.append(f"L-BFGS stopped at max_iter = {max_iter} before tol in "
                        f"{len(stopped)} of {len(sweep)} sweep fits (C = "
                        f"{', '.join(f'{c:.3g}' for c in stopped[:5])}); raise --max-iter")
    if refit_on_val and not refit_converged:
        warnings.append(f"the refit on train + val at C = {chosen:.4g} stopped at max_iter = "
                        f"{max_iter} before tol; raise --max-iter")
    counts = np.bincount(val_labels, minlength=len(class_names))
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        shown = ", ".join(class_names[i] for i in missing[:5]) + (" ..." if missing.size > 5 else "")
        warnings.append(f"the val split has no samples of {missing.size} of {len(counts)} "
                        f"classes ({shown}): C is chosen without them")
    thin = np.flatnonzero((counts > 0) & (counts < MIN_VAL_PER_CLASS))
    if thin.size:
        warnings.append(f"the val split has fewer than {MIN_VAL_PER_CLASS} samples in "
                        f"{thin.size} of {len(counts)} classes (fewest: {int(counts[thin].min())})"
                        f": the choice of C is noisy")
    return tuple(warnings)


@dataclass(frozen=True)
class LinearProbeResult:
    """Test scores of a fitted probe plus everything chosen on validation."""

    test: ClassificationMetrics
    fit: LinearProbeFit

    @property
    def top1(self) -> float:
        """Test top-1 accuracy."""
        return self.test.top1

    @property
    def C(self) -> float:
        """The C chosen on validation."""
        return self.fit.C

    def metrics(self) -> dict[str, float]:
        """The record's ``metrics`` (test scores)."""
        return self.test.metrics()

    def settings(self) -> dict[str, Any]:
        """The record's ``settings`` (see :meth:`LinearProbeFit.settings`)."""
        return self.fit.settings()

    def sweep_curve(self) -> list[dict[str, float]]:
        """See :meth:`LinearProbeFit.sweep_curve`."""
        return self.fit.sweep_curve()


def evaluate_linear_probe(
    fit: LinearProbeFit, test_features: np.ndarray, test_labels: np.ndarray
) -> LinearProbeResult:
    """Score the fitted probe once on test (top-1/top-5/mean per-class/per-class)."""
    check_finite(test_features, "test features")
    scores = fit.probe.predict_scores(test_features)
    labels = check_labels(test_labels, fit.probe.num_classes, "test")
    return LinearProbeResult(
        test=score_classification(scores, labels, fit.probe.class_names), fit=fit
    )


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    **options: Any,
) -> LinearProbeResult:
    """:func:`fit_linear_probe` (which never sees test data) then :func:`evaluate_linear_probe`."""
    fit = fit_linear_probe(train_features, train_labels, val_features, val_labels, **options)
    return evaluate_linear_probe(fit, test_features, test_labels)
