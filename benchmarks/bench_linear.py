"""Linear-probe benchmark: our torch L-BFGS C sweep + refit against scikit-learn's
``LogisticRegression(solver="lbfgs", warm_start=True)`` over the same grid, the same
validation selection (val top-1, ties -> smaller C) and the same warm-started refit on
train + val, measured in the same run on the same float32 features.

Data: synthetic CUB-sized features (5,994 train x 1,024, 200 classes; a stratified 10 % of
train is the validation split; 5,794 test), Gaussian classes with a decaying covariance
spectrum, L2-normalised. Targets: time ratio ours / scikit-learn <= 0.5, test top-1 within
0.3 points.

    PYTHONPATH=. python3 benchmarks/bench_linear.py            # full size (minutes on 2 cores)
    PYTHONPATH=. python3 benchmarks/bench_linear.py --quick    # smoke size
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings

import numpy as np
import torch

from featkit.results import format_table
from probes.defaults import LINEAR_TOL
from probes.linear import default_c_grid, evaluate_linear_probe, fit_linear_probe
from probes.splits import stratified_split

TIME_RATIO_TARGET = 0.5
ACCURACY_GAP_TARGET = 0.003


def make_features(
    n_train: int,
    n_test: int,
    dim: int,
    n_classes: int,
    separation: float,
    label_noise: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes in a random basis: class-mean variance decays as 1/(i+1) along basis
    direction i, noise variance as 1/sqrt(i+1), so the tail directions are mostly noise (as in
    real embeddings, where the class signal sits in the leading components); a shared offset;
    and ``label_noise`` of the labels (train and test) redrawn uniformly. Together these give
    an interior optimum of the L2 strength instead of "the weakest is best"."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    rank = 1.0 + np.arange(dim)
    signal = (basis * rank**-0.5) @ basis.T
    noise = (basis * rank**-0.25) @ basis.T
    means = separation * rng.standard_normal((n_classes, dim)) @ signal
    offset = 0.5 * rng.standard_normal(dim) @ noise

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % n_classes
        rng.shuffle(labels)
        x = means[labels] + offset + rng.standard_normal((n, dim)) @ noise
        flip = rng.random(n) < label_noise
        labels[flip] = rng.integers(0, n_classes, int(flip.sum()))
        return x.astype(np.float32), labels.astype(np.int64)

    (train_x, train_y), (test_x, test_y) = draw(n_train), draw(n_test)
    return train_x, train_y, test_x, test_y


def sklearn_sweep(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    grid: list[float],
    tol: float,
    max_iter: int,
):
    """The same protocol with scikit-learn: warm-started sweep, val selection, refit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(solver="lbfgs", warm_start=True, tol=tol, max_iter=max_iter)
    best = None
    curve = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in grid:
            clf.set_params(C=C)
            clf.fit(train_x, train_y)
            val_top1 = float(np.mean(clf.predict(val_x) == val_y))
            curve.append((val_top1, int(clf.n_iter_[0])))
            if best is None or val_top1 > best[0]:
                best = (val_top1, C, clf.coef_.copy(), clf.intercept_.copy())
        _, best_c, coef, intercept = best
        clf.set_params(C=best_c)
        clf.coef_, clf.intercept_ = coef, intercept
        clf.fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
    return clf, best_c, curve, int(clf.n_iter_[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke-test size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--separation", type=float, default=0.8,
                        help="class-mean scale (default 0.8: ~77 %% test top-1 at full size)")
    parser.add_argument("--label-noise", type=float, default=0.1,
                        help="fraction of labels redrawn at random (default: 0.1)")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads for both torch and scikit-learn's BLAS/OpenMP (default 0: each "
        "library's own default, i.e. all cores)",
    )
    parser.add_argument("--tol", type=float, default=None,
                        help="gradient tolerance for both solvers (default: ours)")
    parser.add_argument("--max-iter", type=int, default=1000)
    args = parser.parse_args(argv)

    if args.quick:
        n_train, n_test, dim, n_classes = 1000, 800, 256, 40
    else:
        n_train, n_test, dim, n_classes = 5994, 5794, 1024, 200
    tol = args.tol if args.tol is not None else LINEAR_TOL
    grid = list(default_c_grid())  # unit-norm grid; the features below are unit norm

    train_x, train_y, test_x, test_y = make_features(
        n_train, n_test, dim, n_classes, args.separation, args.label_noise, args.seed
    )
    train_x /= np.linalg.norm(train_x, axis=1, keepdims=True)
    test_x /= np.linalg.norm(test_x, axis=1, keepdims=True)
    fit_idx, val_idx = stratified_split(train_y, 0.1, seed=args.seed)
    tr_x, tr_y, va_x, va_y = train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx]
    print(
        f"data: {len(tr_y)} train + {len(va_y)} val x {dim}, {n_classes} classes, "
        f"{len(test_y)} test; grid: {len(grid)} C values {grid[0]:.3g} .. {grid[-1]:.3g}; "
        f"tol {tol:g}, max_iter {args.max_iter}",
        flush=True,
    )

    limits = contextlib.nullcontext()
    if args.threads > 0:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        limits = threadpool_limits(args.threads)
    with limits:
        return _compare(args, tol, grid, tr_x, tr_y, va_x, va_y, test_x, test_y)


def _compare(args, tol, grid, tr_x, tr_y, va_x, va_y, test_x, test_y) -> int:
    print(f"threads: torch {torch.get_num_threads()}, "
          f"{'limited to ' + str(args.threads) if args.threads else 'library defaults'}",
          flush=True)
    start = time.perf_counter()
    fit = fit_linear_probe(
        tr_x, tr_y, va_x, va_y, normalization="l2", c_grid=grid, refit_on_val=True, tol=tol,
        max_iter=args.max_iter, device="cpu", seed=args.seed, progress=False,
    )
    ours_time = time.perf_counter() - start
    ours = evaluate_linear_probe(fit, test_x, test_y)
    ours_iters = sum(p.n_iter for p in fit.sweep) + fit.refit_n_iter
    print(f"ours done in {ours_time:.1f} s", flush=True)

    start = time.perf_counter()
    clf, sk_c, sk_curve, sk_refit = sklearn_sweep(tr_x, tr_y, va_x, va_y, grid, tol,
                                                  args.max_iter)
    sk_iters = sum(n for _, n in sk_curve) + sk_refit
    sk_time = time.perf_counter() - start
    sk_top1 = float(np.mean(clf.predict(test_x) == test_y))

    rows = [
        {"method": "featkit torch L-BFGS (float32)", "seconds": f"{ours_time:.2f}",
         "iterations": ours_iters, "chosen C": f"{fit.C:.4g}", "test top1": ours.top1},
        {"method": "sklearn lbfgs warm_start", "seconds": f"{sk_time:.2f}",
         "iterations": sk_iters, "chosen C": f"{sk_c:.4g}", "test top1": sk_top1},
    ]
    print(format_table(rows))
    ratio = ours_time / sk_time
    gap = abs(ours.top1 - sk_top1)
    print(f"time ratio ours / sklearn: {ratio:.3f} (target <= {TIME_RATIO_TARGET}) "
          f"{'OK' if ratio <= TIME_RATIO_TARGET else 'MISSED'}")
    print(f"test top-1 gap: {100 * gap:.2f} points (target <= {100 * ACCURACY_GAP_TARGET:.1f}) "
          f"{'OK' if gap <= ACCURACY_GAP_TARGET else 'MISSED'}")
    curve = format_table([
        {"C": f"{p.C:.3g}", "ours val top1": p.val_top1, "ours iters": p.n_iter,
         "sklearn val top1": sk_val, "sklearn iters": sk_n}
        for p, (sk_val, sk_n) in zip(fit.sweep, sk_curve)
    ])
    print(f"sweeps (refit iterations: ours {fit.refit_n_iter}, sklearn {sk_refit}):\n{curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
