"""Multinomial logistic regression by full-batch L-BFGS in torch, in scikit-learn's convention.

The objective is scikit-learn's, so ``C`` means what it means in ``LogisticRegression(C=...)``::

    sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)        (the bias is not penalised)

Internally it is divided by n (mean cross-entropy), as scikit-learn's lbfgs path does, so the
gradient tolerance ``tol`` has the same meaning as scikit-learn's ``tol`` for ``solver="lbfgs"``.
The C sweep of the probe protocol (:mod:`probes.linear.protocol`) warm-starts this solver and
keeps its curvature history across C values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from featkit._device import torch_device
from featkit.errors import FeatkitError
from probes._dtype import resolve_dtype
from probes.defaults import LINEAR_MAX_ITER, LINEAR_TOL

#: Curvature pairs the L-BFGS memory keeps.
LBFGS_HISTORY_SIZE = 10
#: Rows per block of the objective (bounds the ``rows x K`` logits held at once).
LBFGS_CHUNK_ROWS = 65536


class Objective:
    """Mean cross-entropy + (lam / 2) ||W||^2 and its gradient, for ``theta = [W | b]``.

    Written with few tensor operations per call (two matmuls and a handful of fused
    element-wise ops): on a busy multi-core CPU every parallel region costs a barrier.
    """

    def __init__(self, x_aug: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 chunk_rows: int):
        self.x = x_aug  # n x (D + 1), last column ones
        self.n = x_aug.shape[0]
        self.chunks = []  # (start, stop, flat index of each row's true-class logit)
        for start in range(0, self.n, chunk_rows):
            y = labels[start : start + chunk_rows]
            rows = torch.arange(len(y), device=y.device)
            self.chunks.append((start, start + len(y), rows * num_classes + y))
        self.minus_one = torch.full((min(chunk_rows, self.n),), -1.0, dtype=x_aug.dtype,
                                    device=x_aug.device)
        self.penalised = torch.ones(x_aug.shape[1], dtype=x_aug.dtype, device=x_aug.device)
        self.penalised[-1] = 0.0  # the bias column
        self.evaluations = 0

    def __call__(self, theta: torch.Tensor, lam: float) -> tuple[float, torch.Tensor]:
        self.evaluations += 1
        grad = theta * (self.penalised * lam)  # the penalty's gradient; the data term adds in
        penalty = 0.5 * float(torch.dot(theta.view(-1), grad.view(-1)))
        ce = 0.0
        for start, stop, flat in self.chunks:
            x = self.x[start:stop]
            log_prob = torch.log_softmax(x @ theta.T, dim=1)
            ce -= float(log_prob.view(-1)[flat].sum(dtype=torch.float64))
            prob = log_prob.exp_()
            prob.view(-1).index_add_(0, flat, self.minus_one[: stop - start])
            grad.addmm_(prob.T, x, alpha=1.0 / self.n)
        return ce / self.n + penalty, grad


class LbfgsHistory:
    """L-BFGS memory: curvature pairs (s, y) in one float64 buffer, the two-loop recursion
    done on their inner products, which are kept up to date algebraically. Per iteration this
    costs two matrix-vector products with the buffer (``buf @ g`` for the new gradient and
    ``buf.T @ coef`` for the direction) and a few dot products, whatever the memory size.

    When only the L2 strength changes, each pair is corrected exactly (y += dlam * s on the
    penalised block), so a warm start across the C grid keeps its history.
    """

    def __init__(self, size: int):
        self.size = size
        self.buf: torch.Tensor | None = None  # rows [0, size): s by slot; [size, 2 size): y
        self.order: list[int] = []  # live slots, oldest first
        self.sy = np.zeros((size, size))  # sy[i, j] = s_i . y_j
        self.yy = np.zeros((size, size))  # yy[i, j] = y_i . y_j
        self.grad: torch.Tensor | None = None  # current gradient (float64, flat)
        self.grad_sq = 0.0
        self.prods = np.zeros(2 * size)  # buf @ grad
        self.y_dot_d = np.zeros(size)  # y_i . d for the last direction d

    @property
    def pairs(self) -> list[int]:
        return self.order

    def clear(self) -> None:
        self.order = []

    def start(self, grad: torch.Tensor) -> None:
        """Set the current gradient (float64, flat)."""
        self.grad = grad
        self.grad_sq = float(torch.dot(grad, grad))
        if self.buf is not None:
            self.prods = (self.buf @ grad).cpu().numpy()

    def direction(self) -> torch.Tensor:
        """-H g (float64, flat) for the current gradient g and the L-BFGS inverse-Hessian
        estimate H (plain -g without history)."""
        assert self.grad is not None
        if not self.order:
            return self.grad.neg()
        assert self.buf is not None
        idx = self.order
        m, size = len(idx), self.size
        sg, yg = self.prods[idx], self.prods[size + np.asarray(idx)]
        sy = self.sy[np.ix_(idx, idx)]
        yy = self.yy[np.ix_(idx, idx)]
        rho = 1.0 / np.diag(sy)
        alpha = np.zeros(m)
        for k in range(m - 1, -1, -1):  # q = -g - sum_{j>k} alpha_j y_j
            alpha[k] = rho[k] * (-sg[k] - alpha[k + 1 :] @ sy[k, k + 1 :])
        gamma = sy[-1, -1] / yy[-1, -1]
        beta = np.zeros(m)
        for k in range(m):  # r = gamma * q_final + sum_{j<k} (alpha_j - beta_j) s_j
            y_dot_r = gamma * (-yg[k] - yy[k] @ alpha) + (alpha[:k] - beta[:k]) @ sy[:k, k]
            beta[k] = rho[k] * y_dot_r
        on_s, on_y = alpha - beta, -gamma * alpha
        # d = -gamma g + S^T on_s + Y^T on_y, so y_i . d follows from known inner products
        self.y_dot_d[:] = 0.0
        self.y_dot_d[idx] = -gamma * yg + sy.T @ on_s + yy @ on_y
        coef = np.zeros(2 * size)
        coef[idx] = on_s
        coef[size + np.asarray(idx)] = on_y
        coef_t = torch.as_tensor(coef, device=self.grad.device)
        return torch.addmv(self.grad, self.buf.T, coef_t, beta=-gamma)

    def accept(self, step: float, direction: torch.Tensor, new_grad: torch.Tensor) -> None:
        """Record the step ``s = step * direction`` and ``y = new_grad - grad`` (float64,
        flat) unless s . y is not positive, and make ``new_grad`` the current gradient."""
        assert self.grad is not None
        grad, size = self.grad, self.size
        if self.buf is None:
            self.buf = grad.new_zeros(2 * size, grad.numel())
        old_prods = self.prods
        new_prods = (self.buf @ new_grad).cpu().numpy()
        d_new_g = float(torch.dot(direction, new_grad))
        d_g = float(torch.dot(direction, grad))
        g_new_g = float(torch.dot(grad, new_grad))
        new_sq = float(torch.dot(new_grad, new_grad))
        s_dot_y = step * (d_new_g - d_g)
        y_dot_y = new_sq - 2.0 * g_new_g + self.grad_sq
        if not self.order:
            self.y_dot_d[:] = 0.0
        if math.isfinite(s_dot_y) and s_dot_y > 1e-10 * y_dot_y:
            slot = (self.order.pop(0) if len(self.order) == size
                    else next(i for i in range(size) if i not in self.order))
            torch.mul(direction, step, out=self.buf[slot])
            torch.sub(new_grad, grad, out=self.buf[size + slot])
            self.sy[:, slot] = new_prods[:size] - old_prods[:size]  # s_i . y_new
            self.sy[slot, :] = step * self.y_dot_d  # s_new . y_i
            self.yy[:, slot] = new_prods[size:] - old_prods[size:]  # y_i . y_new
            self.yy[slot, :] = self.yy[:, slot]
            self.sy[slot, slot], self.yy[slot, slot] = s_dot_y, y_dot_y
            new_prods[slot] = step * d_new_g  # s_new . g_new
            new_prods[size + slot] = new_sq - g_new_g  # y_new . g_new
            self.order.append(slot)
        self.grad, self.grad_sq, self.prods = new_grad, new_sq, new_prods

    def shift_penalty(self, dlam: float, shape: tuple[int, int]) -> None:
        """The L2 strength changes by ``dlam``: y_i += dlam * s_i on the weights (not the
        bias). Call :meth:`start` afterwards."""
        if not self.order:
            return
        assert self.buf is not None
        s3 = self.buf[: self.size].view(self.size, *shape)
        y3 = self.buf[self.size :].view(self.size, *shape)
        y3[:, :, :-1].add_(s3[:, :, :-1], alpha=dlam)
        gram = (self.buf @ self.buf.T).cpu().numpy()
        self.sy = gram[: self.size, self.size :].copy()
        self.yy = gram[self.size :, self.size :].copy()
        self.order = [i for i in self.order if self.sy[i, i] > 1e-10 * self.yy[i, i]]


@dataclass(frozen=True)
class SolveInfo:
    """How one :func:`lbfgs` solve ended: final loss, iterations, convergence and why it stopped."""

    loss: float
    n_iter: int
    converged: bool
    stop: str  # "gtol", "ftol", "line_search" or "max_iter"


def lbfgs(
    objective: Objective,
    theta: torch.Tensor,
    lam: float,
    history: LbfgsHistory,
    *,
    tol: float,
    max_iter: int,
    initial: tuple[float, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, SolveInfo]:
    """Minimise ``objective(., lam)`` from ``theta`` with backtracking L-BFGS (``initial``:
    the loss and gradient at ``theta`` when the caller already has them).

    A step is accepted on the Armijo condition or, once loss differences sink into rounding
    noise (float32), on Hager and Zhang's approximate Wolfe condition, which only uses the
    directional derivative: 0.9 f'(0) <= f'(t) <= 0.8 |f'(0)|. Stops when max |grad| <= tol
    (scikit-learn's ``gtol``), when an Armijo step's relative decrease is below 64 float64
    epsilons (scikit-learn's ``ftol``), when no step can be found, or after ``max_iter``.
    The direction, slopes and curvature pairs are kept in float64 whatever ``theta``'s dtype.
    """
    noise = 10 * torch.finfo(theta.dtype).eps
    ftol = 64 * np.finfo(np.float64).eps
    loss, grad = initial if initial is not None else objective(theta, lam)
    history.start(grad.reshape(-1).double())
    n_iter = 0
    converged = float(torch.linalg.vector_norm(grad, ord=math.inf)) <= tol
    stop = "gtol" if converged else "max_iter"
    while not converged and n_iter < max_iter:
        g = history.grad
        assert g is not None
        direction = history.direction()
        slope = float(torch.dot(g, direction))
        if not slope < 0:  # lost descent (numerical trouble): restart from steepest descent
            history.clear()
            direction = g.neg()
            slope = -history.grad_sq
        work_direction = direction.to(theta.dtype).view_as(theta)
        step = 1.0 if history.pairs else min(1.0, 1.0 / float(grad.abs().sum()))
        accepted = armijo = False
        new_g = None
        for _ in range(30):
            candidate = theta.add(work_direction, alpha=step)
            new_loss, new_grad = objective(candidate, lam)
            new_g = None
            if math.isfinite(new_loss):
                if new_loss <= loss + 1e-4 * step * slope:
                    accepted = armijo = True
                    break
                if abs(new_loss - loss) <= noise * max(abs(loss), 1.0):
                    new_g = new_grad.reshape(-1).double()
                    new_slope = float(torch.dot(new_g, direction))
                    if 0.9 * slope <= new_slope <= -0.8 * slope:
                        accepted = True
                        break
                # minimiser of the quadratic through f(0), f'(0), f(t)
                denom = 2.0 * (new_loss - loss - slope * step)
                trial = -slope * step * step / denom if denom > 0 else 0.5 * step
                step = min(max(trial, 0.1 * step), 0.5 * step)
            else:
                step *= 0.1
            if step * -slope < noise * max(abs(loss), 1.0) * 1e-3:
                break  # the step is too short to change anything
        if not accepted:
            stop = "line_search"
            break
        n_iter += 1
        history.accept(step, direction, new_g if new_g is not None
                       else new_grad.reshape(-1).double())
        decrease = (loss - new_loss) / max(abs(loss), abs(new_loss), 1.0)
        theta, loss, grad = candidate, new_loss, new_grad
        converged = float(torch.linalg.vector_norm(grad, ord=math.inf)) <= tol
        if converged:
            stop = "gtol"
        elif armijo and decrease <= ftol:
            stop = "ftol"
            break
    return theta, SolveInfo(loss=loss, n_iter=n_iter, converged=converged, stop=stop)


def augment(x: torch.Tensor) -> torch.Tensor:
    """``[x | 1]``: the features with a ones column, so ``theta = [W | b]`` is one matrix."""
    return torch.cat([x, torch.ones(x.shape[0], 1, device=x.device, dtype=x.dtype)], dim=1)


def check_labels(labels: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    """``labels`` as int64, or a one-line error naming the ``what`` split when one lies outside
    ``[0, n_classes)``."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise FeatkitError(
            f"{what} labels must lie in [0, {n_classes}); got [{labels.min()}, {labels.max()}]"
        )
    return labels


@dataclass(frozen=True)
class LogisticFit:
    """One solved problem: ``weight`` K x D, ``bias`` K (float64), the regularised loss in
    scikit-learn's convention (sum of CE + ||W||^2 / 2C), iterations and convergence."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    loss: float
    n_iter: int
    converged: bool


def fit_logistic_regression(
    features: np.ndarray,
    labels: np.ndarray,
    C: float,
    *,
    num_classes: int | None = None,
    tol: float = LINEAR_TOL,
    max_iter: int = LINEAR_MAX_ITER,
    history_size: int = LBFGS_HISTORY_SIZE,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device | None = None,
    chunk_rows: int = LBFGS_CHUNK_ROWS,
) -> LogisticFit:
    """Multinomial logistic regression at one ``C`` (scikit-learn's objective), from zero.

    The features are used as given (no normalisation); see :func:`probes.linear.fit_linear_probe`
    for the probe protocol. Float64 by default: this is the reference-grade single fit. With two
    classes the model is still multinomial (two weight rows), which equals scikit-learn's
    binary model at ``2 C``, not at ``C``.
    """
    dev, dt = torch_device(device), resolve_dtype(dtype)
    x = np.asarray(features)
    n_classes = int(num_classes if num_classes is not None else np.max(labels) + 1)
    y = check_labels(labels, n_classes, "training")
    objective = Objective(
        augment(torch.as_tensor(x, device=dev, dtype=dt)), torch.as_tensor(y, device=dev),
        n_classes, chunk_rows,
    )
    theta = torch.zeros(n_classes, x.shape[1] + 1, device=dev, dtype=dt)
    lam = 1.0 / (C * x.shape[0])
    theta, info = lbfgs(
        objective, theta, lam, LbfgsHistory(history_size), tol=tol, max_iter=max_iter
    )
    theta64 = theta.to(torch.float64).cpu().numpy()
    return LogisticFit(
        weight=theta64[:, :-1],
        bias=theta64[:, -1],
        C=float(C),
        loss=info.loss * x.shape[0],
        n_iter=info.n_iter,
        converged=info.converged,
    )


def regularized_loss(
    weight: np.ndarray, bias: np.ndarray, features: np.ndarray, labels: np.ndarray, C: float
) -> float:
    """scikit-learn's objective in float64: sum_i CE(W x_i + b, y_i) + ||W||^2 / (2C)."""
    w = np.asarray(weight, dtype=np.float64)
    logits = np.asarray(features, dtype=np.float64) @ w.T + np.asarray(bias, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    ce = lse - logits[np.arange(len(labels)), np.asarray(labels)]
    return float(ce.sum() + np.sum(w * w) / (2.0 * C))
