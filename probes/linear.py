"""Linear probe: multinomial logistic regression by full-batch L-BFGS in torch, an L2-strength
sweep scored on a validation split, one refit, and one final score on test.

The objective is scikit-learn's, so ``C`` means what it means in ``LogisticRegression(C=...)``::

    sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)        (the bias is not penalised)

Internally it is divided by n (mean cross-entropy), as scikit-learn's lbfgs path does, so the
gradient tolerance ``tol`` has the same meaning as scikit-learn's ``tol`` for ``solver="lbfgs"``.

Test labels cannot reach model selection: :func:`fit_linear_probe` takes no test data at all;
:func:`evaluate_linear_probe` scores the fitted probe on test once, afterwards.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featkit.errors import FeatkitError
from probes import _matmul
from probes.classification import ClassificationMetrics, score_classification

NORMALIZATIONS = ("none", "l2", "standardize")

#: Default C grid for unit-norm features (see :func:`default_c_grid`).
UNIT_NORM_C_GRID = tuple(float(c) for c in 10.0 ** np.linspace(-2.0, 5.0, 15))


# --------------------------------------------------------------------------- normalisation


def _normalization_stats(
    features: np.ndarray, normalization: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, std) for ``standardize`` (std of constant features set to 1), else (None, None)."""
    if normalization not in NORMALIZATIONS:
        raise FeatkitError(
            f"unknown normalisation {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    if normalization != "standardize":
        return None, None
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _normalize_tensor(
    x: torch.Tensor, normalization: str, mean: torch.Tensor | None, std: torch.Tensor | None
) -> torch.Tensor:
    if normalization == "l2":
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if normalization == "standardize":
        return (x - mean) / std
    return x


class _ProbeLinear(torch.autograd.Function):
    """``x @ W.T + b``, differentiable in ``x`` only (the probe is fixed), on the fast GEMM of
    :mod:`probes._matmul` both ways: the input gradient is ``g @ W = linear(g, W.T)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, packed, weight_t, packed_t):
        ctx.save_for_backward(weight_t)
        ctx.packed_t = packed_t
        return _matmul.linear(x, weight, packed).add_(bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weight_t,) = ctx.saved_tensors
        grad_x = _matmul.linear(grad.contiguous(), weight_t, ctx.packed_t)
        return grad_x, None, None, None, None, None


class _L2NormalizedLinear(torch.autograd.Function):
    """``(x / max(|x|, 1e-12)) @ W.T + b``, differentiable in ``x`` only, with a fused gradient.

    Autograd's chain through the row norm makes several passes over the ``N x D`` input and took
    half of a PGD step on CUB-sized features. With ``n = |x|``, ``u = x / n`` and ``g`` the logit
    gradient, ``dL/dx = (g / n) @ W - x * (g . u W^T) / n^2``, and ``u W^T`` is the forward's
    output less the bias, so the input gradient is one GEMM and one pass over ``x``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, packed, weight_t, packed_t):
        raw_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        norm = raw_norm.clamp_min(1e-12)
        projected = _matmul.linear(x, weight, packed).div_(norm)  # (x / n) W^T
        ctx.save_for_backward(x, weight_t, norm, projected, raw_norm >= 1e-12)
        ctx.packed_t = packed_t
        return projected + bias

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight_t, norm, projected, on_sphere = ctx.saved_tensors
        grad_x = _matmul.linear((grad / norm).contiguous(), weight_t, ctx.packed_t)
        radial = (grad * projected).sum(dim=-1, keepdim=True).div_(norm * norm)
        grad_x.addcmul_(x, radial.mul_(on_sphere), value=-1.0)  # below 1e-12 the norm is clamped
        return grad_x, None, None, None, None, None


# --------------------------------------------------------------------------- saved probe


@dataclass(frozen=True)
class LinearProbe:
    """A trained linear classifier over raw features: normalise, then ``x @ weight.T + bias``.

    ``weight`` is ``K x D`` and ``bias`` ``K`` (float32); ``mean``/``std`` are set only for
    ``normalization == "standardize"`` (train statistics). :meth:`logits` is differentiable in
    its input, so attacks can perturb raw features.
    """

    weight: np.ndarray
    bias: np.ndarray
    class_names: tuple[str, ...]
    normalization: str = "none"
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    C: float = float("nan")
    _tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _tensor(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """The array ``name`` as a tensor on (device, dtype), converted once per pair (attacks
        call :meth:`logits` many times)."""
        value = getattr(self, name)
        if value is None:
            return None
        key = (name, str(device), dtype)
        if key not in self._tensors:
            self._tensors[key] = torch.as_tensor(value, device=device, dtype=dtype)
        return self._tensors[key]

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the tensor cache (oneDNN-packed weights have no storage
        to copy; they are rebuilt on first use)."""
        return {**self.__dict__, "_tensors": {}}

    def _gemm_operands(self, device: torch.device, dtype: torch.dtype) -> tuple:
        """``(weight, packed, weight.T, packed weight.T)`` for :mod:`probes._matmul`, built once
        per (device, dtype)."""
        key = ("gemm", str(device), dtype)
        if key not in self._tensors:
            weight = self._tensor("weight", device, dtype)
            weight_t = weight.T.contiguous()
            self._tensors[key] = (weight, _matmul.pack(weight), weight_t, _matmul.pack(weight_t))
        return self._tensors[key]

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the stored normalisation (differentiably) to raw features."""
        dev, dt = features.device, features.dtype
        return _normalize_tensor(features, self.normalization, self._tensor("mean", dev, dt),
                                 self._tensor("std", dev, dt))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits ``N x K`` for raw features ``N x D`` (normalisation, then linear map)."""
        if features.shape[-1] != self.dim:
            raise ValueError(f"probe expects {self.dim}-d features, got {features.shape[-1]}-d")
        dev, dt = features.device, features.dtype
        operands = self._gemm_operands(dev, dt)
        bias = self._tensor("bias", dev, dt)
        if self.normalization == "l2":  # (x / |x|) W^T == (x W^T) / |x|: no normalised copy
            return _L2NormalizedLinear.apply(features.contiguous(), operands[0], bias,
                                             *operands[1:])
        return _ProbeLinear.apply(self.normalize(features).contiguous(), operands[0], bias,
                                  *operands[1:])

    def predict_scores(self, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Logits as a NumPy ``N x K`` float32 array."""
        x = np.asarray(features, dtype=np.float32)
        out = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
                out[start : start + batch_size] = self.logits(chunk).numpy()
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted class ids (ties go to the lower id)."""
        return np.argmax(self.predict_scores(features), axis=1)

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` (NumPy arrays + JSON-free scalars) or ``.pt`` (a plain dict).

        Keys: ``weight`` (K x D float32), ``bias`` (K), ``class_names`` (K str),
        ``normalization`` (str), ``mean``/``std`` (D, present only for standardize), ``C``.
        """
        path = Path(path)
        payload = self._payload()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            arrays = {k: v for k, v in payload.items() if v is not None}
            arrays["class_names"] = np.asarray(payload["class_names"], dtype=np.str_)
            arrays["normalization"] = np.asarray(payload["normalization"])
            arrays["C"] = np.asarray(payload["C"], dtype=np.float64)
            with path.open("wb") as handle:
                np.savez(handle, **arrays)
        elif path.suffix == ".pt":
            tensors = {
                k: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in payload.items()
            }
            torch.save(tensors, path)
        else:
            raise FeatkitError(f"probe file {path} must end in .npz or .pt")
        return path

    def _payload(self) -> dict[str, Any]:
        return {
            "weight": np.asarray(self.weight, dtype=np.float32),
            "bias": np.asarray(self.bias, dtype=np.float32),
            "class_names": list(self.class_names),
            "normalization": self.normalization,
            "mean": None if self.mean is None else np.asarray(self.mean, dtype=np.float32),
            "std": None if self.std is None else np.asarray(self.std, dtype=np.float32),
            "C": float(self.C),
        }

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        """Read a probe written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FeatkitError(f"probe file {path} does not exist")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    raw = {k: data[k] for k in data.files}
                raw["class_names"] = [str(c) for c in raw["class_names"].tolist()]
                raw["normalization"] = str(raw["normalization"])
                raw["C"] = float(raw["C"])
            elif path.suffix == ".pt":
                raw = torch.load(path, map_location="cpu", weights_only=True)
                raw = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
            else:
                raise FeatkitError(f"probe file {path} must end in .npz or .pt")
        except (KeyError, ValueError, OSError, RuntimeError, zipfile.BadZipFile) as err:
            raise FeatkitError(f"probe file {path} is not a saved linear probe ({err})") from err
        missing = {"weight", "bias", "class_names", "normalization"} - set(raw)
        if missing:
            raise FeatkitError(f"probe file {path} lacks {', '.join(sorted(missing))}")
        return cls(
            weight=np.asarray(raw["weight"], dtype=np.float32),
            bias=np.asarray(raw["bias"], dtype=np.float32),
            class_names=tuple(raw["class_names"]),
            normalization=str(raw["normalization"]),
            mean=None if raw.get("mean") is None else np.asarray(raw["mean"], dtype=np.float32),
            std=None if raw.get("std") is None else np.asarray(raw["std"], dtype=np.float32),
            C=float(raw.get("C", float("nan"))),
        )


# --------------------------------------------------------------------------- solver


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "float64": torch.float64}[dtype]
    except KeyError:
        raise FeatkitError(f"dtype must be float32 or float64, got {dtype!r}") from None


class _Objective:
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


class _LbfgsHistory:
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
class _SolveInfo:
    loss: float
    n_iter: int
    converged: bool
    stop: str  # "gtol", "ftol", "line_search" or "max_iter"


def _lbfgs(
    objective: _Objective,
    theta: torch.Tensor,
    lam: float,
    history: _LbfgsHistory,
    *,
    tol: float,
    max_iter: int,
    initial: tuple[float, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, _SolveInfo]:
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
    return theta, _SolveInfo(loss=loss, n_iter=n_iter, converged=converged, stop=stop)


def _augment(features: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features), device=device, dtype=dtype)
    return torch.cat([x, torch.ones(x.shape[0], 1, device=device, dtype=dtype)], dim=1)


def _check_labels(labels: np.ndarray, n_classes: int, what: str) -> np.ndarray:
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
    tol: float = 1e-6,
    max_iter: int = 1000,
    history_size: int = 10,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device | None = None,
    chunk_rows: int = 65536,
) -> LogisticFit:
    """Multinomial logistic regression at one ``C`` (scikit-learn's objective), from zero.

    The features are used as given (no normalisation); see :func:`fit_linear_probe` for the
    probe protocol. Float64 by default: this is the reference-grade single fit. With two
    classes the model is still multinomial (two weight rows), which equals scikit-learn's
    binary model at ``2 C``, not at ``C``.
    """
    dev, dt = _resolve_device(device), _resolve_dtype(dtype)
    x = np.asarray(features)
    n_classes = int(num_classes if num_classes is not None else np.max(labels) + 1)
    y = _check_labels(labels, n_classes, "training")
    objective = _Objective(
        _augment(x, dev, dt), torch.as_tensor(y, device=dev), n_classes, chunk_rows
    )
    theta = torch.zeros(n_classes, x.shape[1] + 1, device=dev, dtype=dt)
    lam = 1.0 / (C * x.shape[0])
    theta, info = _lbfgs(
        objective, theta, lam, _LbfgsHistory(history_size), tol=tol, max_iter=max_iter
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


# --------------------------------------------------------------------------- probe protocol


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


def split_validation(
    labels: np.ndarray, fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of a train split into (train_idx, val_idx), sorted.

    Each class with at least two samples gives round(fraction * n_c) samples (at least one,
    never all) to validation; single-sample classes stay in train. Seeded, deterministic.
    """
    if not 0.0 < fraction < 1.0:
        raise FeatkitError(f"validation fraction must lie in (0, 1), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val_parts = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < 2:
            continue
        take = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        val_parts.append(rng.permutation(members)[:take])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


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

    def settings(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "normalization": self.normalization,
            "c_grid": [p.C for p in self.sweep],
            "selection": "val top1 (ties -> smaller C)",
            "refit_on_val": self.refit_on_val,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "dtype": self.dtype,
            "seed": self.seed,
            "n_train": self.n_train,
            "n_val": self.n_val,
        }

    def sweep_curve(self) -> list[dict[str, float]]:
        return [{"C": p.C, "val_top1": p.val_top1} for p in self.sweep]


def fit_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    normalization: str = "l2",
    c_grid: Sequence[float] | None = None,
    refit_on_val: bool = True,
    tol: float = 1e-6,
    max_iter: int = 1000,
    history_size: int = 10,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    seed: int = 0,
    chunk_rows: int = 65536,
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
    dev, dt = _resolve_device(device), _resolve_dtype(dtype)
    train_x = np.asarray(train_features, dtype=np.float32)
    val_x = np.asarray(val_features, dtype=np.float32)
    if train_x.ndim != 2 or val_x.ndim != 2 or train_x.shape[1] != val_x.shape[1]:
        raise FeatkitError(
            f"train and val features must be 2-D with the same width; got {train_x.shape} "
            f"and {val_x.shape}"
        )
    if len(val_x) == 0:
        raise FeatkitError("the validation split is empty; C cannot be selected without it")
    n_classes = len(class_names) if class_names is not None else int(max(
        np.max(train_labels), np.max(val_labels)) + 1)
    names = tuple(class_names) if class_names is not None else tuple(map(str, range(n_classes)))
    train_y = _check_labels(train_labels, n_classes, "train")
    val_y = _check_labels(val_labels, n_classes, "val")
    absent = np.flatnonzero(np.bincount(train_y, minlength=n_classes) == 0)
    if absent.size:
        shown = ", ".join(names[i] for i in absent[:5]) + (" ..." if absent.size > 5 else "")
        raise FeatkitError(
            f"{absent.size} class(es) have no training samples ({shown}); a logistic "
            "regression cannot learn them: drop or merge them (--label-map)"
        )

    mean, std = _normalization_stats(train_x, normalization)
    t_mean = None if mean is None else torch.as_tensor(mean, device=dev, dtype=dt)
    t_std = None if std is None else torch.as_tensor(std, device=dev, dtype=dt)

    def prepare(x: np.ndarray) -> torch.Tensor:
        xt = torch.as_tensor(x, device=dev, dtype=dt)
        xt = _normalize_tensor(xt, normalization, t_mean, t_std)
        return torch.cat([xt, torch.ones(xt.shape[0], 1, device=dev, dtype=dt)], dim=1)

    train_aug, val_aug = prepare(train_x), prepare(val_x)
    if c_grid is None:
        mean_sq = float((train_aug[:, :-1].double() ** 2).sum(dim=1).mean())
        c_grid = default_c_grid(mean_sq)
    grid = sorted({float(c) for c in c_grid})
    if not grid or grid[0] <= 0:
        raise FeatkitError(f"the C grid must hold positive values; got {list(c_grid)}")

    objective = _Objective(train_aug, torch.as_tensor(train_y, device=dev), n_classes, chunk_rows)
    history = _LbfgsHistory(history_size)
    theta = torch.zeros(n_classes, train_x.shape[1] + 1, device=dev, dtype=dt)
    n_train = len(train_y)
    sweep: list[SweepPoint] = []
    best: tuple[float, float, torch.Tensor] | None = None  # (val_top1, C, theta)
    previous: tuple[float, torch.Tensor] | None = None  # (log C, solution) one step back
    previous_lam = None
    bar = _progress(grid, progress, "C sweep")
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
        solution, info = _lbfgs(objective, start, lam, history, tol=tol, max_iter=max_iter,
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
        refit_objective = _Objective(both, labels_both, n_classes, chunk_rows)
        lam = 1.0 / (best_c * len(labels_both))
        best_theta, info = _lbfgs(
            refit_objective, best_theta, lam, _LbfgsHistory(history_size), tol=tol,
            max_iter=max_iter,
        )
        refit_iter, refit_converged = info.n_iter, info.converged
    else:
        chosen = next(p for p in sweep if p.C == best_c)
        refit_iter, refit_converged = chosen.n_iter, chosen.converged

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
    )


def _progress(items: Sequence[float], enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


@dataclass(frozen=True)
class LinearProbeResult:
    """Test scores of a fitted probe plus everything chosen on validation."""

    test: ClassificationMetrics
    fit: LinearProbeFit

    @property
    def top1(self) -> float:
        return self.test.top1

    @property
    def C(self) -> float:
        return self.fit.C

    def metrics(self) -> dict[str, float]:
        return self.test.metrics()

    def settings(self) -> dict[str, Any]:
        return self.fit.settings()

    def sweep_curve(self) -> list[dict[str, float]]:
        return self.fit.sweep_curve()


def evaluate_linear_probe(
    fit: LinearProbeFit, test_features: np.ndarray, test_labels: np.ndarray
) -> LinearProbeResult:
    """Score the fitted probe once on test (top-1/top-5/mean per-class/per-class)."""
    scores = fit.probe.predict_scores(test_features)
    labels = _check_labels(test_labels, fit.probe.num_classes, "test")
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
