"""Feature-space PGD against a linear probe: how far must features move to break the classifier?

FG-BMK Table 5 reports linear-probe accuracy on original vs PGD-perturbed features. This module
runs that experiment exactly: projected gradient ascent (Madry et al. 2018) on the probe's
cross-entropy, directly on the cached features, under an explicit L-inf or L2 budget ``eps``.

- L-inf: ``delta <- clip(delta + alpha * sign(grad), -eps, eps)``;
  L2: ``delta <- Proj_ball(delta + alpha * grad / ||grad||)`` (radial projection).
- There is **no box clamp**: features are not pixels. (torchattacks' ``PGD`` clamps to [0, 1]
  silently; fed raw features it zeroes negative coordinates and moves points far beyond eps.)
- ``eps`` is in feature units, or with ``eps_rel=True`` a fraction of the set's mean feature norm
  measured in the attack's own norm (``mean ||x||_inf`` for L-inf, ``mean ||x||_2`` for L2),
  because feature scales differ across models by orders of magnitude.
- The perturbation is added to the *raw* features (the cached feature space). A probe that
  L2-normalises or standardises inside ``logits`` sees the normalised perturbed feature, but
  ``eps`` and every reported ``||delta||`` stay in raw feature units.
- The whole set is attacked at once (one batched forward/backward per step); the per-sample
  cross-entropy is *summed*, so each sample's gradient is exactly its own and the batched attack
  equals a per-sample loop of the same attack.

Attack success rate: untargeted, the fraction of clean-correct samples that the attack makes
wrong; targeted (``least-likely`` or ``random`` target class), the fraction of all samples
predicted as their target after the attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from featkit._device import torch_device
from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes._dtype import resolve_dtype
from probes._progress import progress_bar
from probes.defaults import PGD_NORM, PGD_STEPS, PGD_TARGET

NORMS = ("linf", "l2")
TARGETS = ("none", "least-likely", "random")
#: Default step size: ``alpha = ALPHA_FACTOR * eps / steps`` (Madry et al.; torchattacks' 2/255
#: for eps = 8/255 and 10 steps is the same rule).
ALPHA_FACTOR = 2.5


class LogitHead(Protocol):
    """Anything with differentiable class logits over raw features (``probes.linear.LinearProbe``)."""

    def logits(self, features: torch.Tensor) -> torch.Tensor: ...


# --------------------------------------------------------------------------- small helpers


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise FeatkitError(f"unknown attack norm {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def check_target(target: str | None) -> str:
    target = target or PGD_TARGET
    if target not in TARGETS:
        raise FeatkitError(f"unknown target mode {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def default_alpha(eps: float, steps: int) -> float:
    """Step size ``2.5 * eps / steps``: enough to cross the ball, small enough to refine."""
    return ALPHA_FACTOR * eps / steps if steps > 0 else 0.0


def feature_norms(features: np.ndarray | torch.Tensor, norm: str) -> np.ndarray:
    """Per-row ``||x||_inf`` or ``||x||_2`` in float64."""
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    x = x.detach().to(torch.float64).reshape(x.shape[0], -1)
    order = math.inf if check_norm(norm) == "linf" else 2
    return torch.linalg.vector_norm(x, ord=order, dim=1).cpu().numpy()


def eps_scale(features: np.ndarray, norm: str) -> float:
    """The unit of a relative budget: the mean feature norm of the set in the attack's norm."""
    if len(features) == 0:
        raise FeatkitError("no features to attack: the feature set is empty")
    return float(np.mean(feature_norms(features, norm)))


def choose_targets(
    clean_logits: np.ndarray | torch.Tensor, labels: np.ndarray, mode: str, seed: int = 0
) -> np.ndarray | None:
    """Target class per sample, never the true label: ``least-likely`` (lowest clean logit among
    the other classes, ties to the lower id) or ``random`` (uniform over the other classes,
    seeded); ``none`` gives None."""
    mode = check_target(mode)
    if mode == "none":
        return None
    logits = torch.as_tensor(clean_logits).detach().to(torch.float64).cpu().clone()
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n, k = logits.shape
    if k < 2:
        raise FeatkitError("a targeted attack needs at least two classes")
    if mode == "least-likely":
        logits[torch.arange(n), labels_t] = math.inf
        return torch.argmin(logits, dim=1).numpy().astype(np.int64)
    draw = np.random.default_rng(seed).integers(0, k - 1, size=n)
    return (draw + (draw >= np.asarray(labels, dtype=np.int64))).astype(np.int64)


def _per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


# --------------------------------------------------------------------------- the attack


def random_start_delta(
    shape: torch.Size | Sequence[int],
    eps: float,
    norm: str,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A uniform draw from the eps-ball: uniform per coordinate (L-inf), or uniform in volume
    (L2: Gaussian direction, radius ``eps * U**(1/D)``; torchattacks' PGDL2 draws the radius
    uniformly instead, which concentrates starts near the centre in high dimension)."""
    if check_norm(norm) == "linf":
        u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        return (2.0 * u - 1.0) * eps
    direction = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    flat = direction.reshape(direction.shape[0], -1)
    dim = flat.shape[1]
    lengths = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64).clamp_min(1e-300)
    radius = eps * torch.rand(flat.shape[0], generator=generator, dtype=torch.float64,
                              device=device) ** (1.0 / dim)
    scale = (radius / lengths).to(dtype).reshape(-1, *([1] * (direction.dim() - 1)))
    return direction * scale


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``delta`` (rows = samples) onto the eps-ball: clip (L-inf) or radial shrink (L2).

    L2 norms and scale factors are computed in float64, so ``||delta||_2 <= eps * (1 + 2**-23)``
    in float32."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.reshape(delta.shape[0], -1)
    lengths = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64)
    factor = torch.where(lengths > eps, eps / lengths.clamp_min(1e-300), torch.ones_like(lengths))
    return delta * factor.to(delta.dtype).reshape(-1, *([1] * (delta.dim() - 1)))


def _ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1)
    lengths = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    unit = torch.where(lengths > 0, flat / lengths.clamp_min(torch.finfo(grad.dtype).tiny),
                       torch.zeros_like(flat))
    return unit.reshape(grad.shape)


#: CPU blocks of rows are sized so one ``rows x D`` tensor takes about this many bytes per
#: torch thread: a block's features, perturbation and gradient then stay in cache for all the
#: steps (CUB-sized set, one thread: 10 % faster than the whole set at once, 23 % with two).
CPU_BLOCK_BYTES_PER_THREAD = 2 * 1024 * 1024


def default_block_rows(features: torch.Tensor) -> int:
    """Rows attacked together: the whole set on an accelerator, cache-sized blocks on the CPU."""
    n = max(len(features), 1)
    if features.device.type != "cpu" or len(features) == 0:
        return n
    row_bytes = max(features[0].numel(), 1) * features.element_size()
    rows = CPU_BLOCK_BYTES_PER_THREAD * torch.get_num_threads() // row_bytes
    return int(min(n, max(rows, 64)))


def pgd(
    head: LogitHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int = PGD_STEPS,
    alpha: float | None = None,
    norm: str = PGD_NORM,
    random_start: bool = False,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    loss_trace: list[float] | None = None,
    block_rows: int | None = None,
) -> torch.Tensor:
    """The perturbation ``delta`` (same shape as ``features``) after ``steps`` PGD steps.

    Maximises the summed cross-entropy of ``head.logits(features + delta)`` w.r.t. ``labels``
    (or minimises it w.r.t. ``targets`` when given), keeping every row within the eps-ball.
    No box constraint. ``loss_trace``, when a list, receives the mean loss (of the objective's
    cross-entropy term) before each step and after the last one.

    Samples do not interact, so the set is attacked in blocks of ``block_rows`` rows, each for
    all the steps (default :func:`default_block_rows`); the block size does not change the result
    beyond float rounding. The random start is drawn for the whole set at once.
    """
    norm = check_norm(norm)
    if eps < 0 or steps < 0:
        raise FeatkitError(f"eps and steps must be non-negative; got eps={eps}, steps={steps}")
    alpha = default_alpha(eps, steps) if alpha is None else float(alpha)
    x0 = features.detach().contiguous()
    goal = labels if targets is None else targets
    if random_start and eps > 0:
        delta = random_start_delta(x0.shape, eps, norm, generator=generator, dtype=x0.dtype,
                                   device=x0.device)
    else:
        delta = torch.zeros_like(x0)
    rows = default_block_rows(x0) if block_rows is None else int(block_rows)
    if rows < 1:
        raise FeatkitError(f"block_rows must be positive, got {block_rows}")
    losses = torch.zeros(steps + 1, dtype=torch.float64)
    for start in range(0, len(x0), rows):
        block = slice(start, start + rows)
        losses += _pgd_block(head, x0[block], goal[block], delta[block], eps=eps, steps=steps,
                             alpha=alpha * (1.0 if targets is None else -1.0), norm=norm,
                             trace=loss_trace is not None)
    if loss_trace is not None:
        loss_trace.extend((losses / max(len(x0), 1)).tolist())
    return delta


def _pgd_block(
    head: LogitHead, x0: torch.Tensor, goal: torch.Tensor, delta: torch.Tensor, *, eps: float,
    steps: int, alpha: float, norm: str, trace: bool,
) -> torch.Tensor:
    """Run :func:`pgd`'s steps on one block, updating ``delta`` (a view) in place; returns the
    summed loss before each step and after the last (zeros unless ``trace``). A negative
    ``alpha`` descends (targeted)."""
    losses = torch.zeros(steps + 1, dtype=torch.float64)
    point = torch.empty_like(x0)  # x0 + delta, the leaf the gradient is taken at (reused)
    for step in range(steps):
        with torch.no_grad():
            torch.add(x0, delta, out=point)
        point.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(head.logits(point), goal, reduction="sum")
            (grad,) = torch.autograd.grad(loss, point)  # d/d(x0 + delta) = d/d(delta)
        point = point.detach()
        if trace:
            losses[step] = float(loss.detach())
        with torch.no_grad():
            if norm == "linf":  # in place: the block-sized passes dominate once the probe is cheap
                delta.add_(grad.sign_(), alpha=alpha).clamp_(-eps, eps)
            else:
                delta.add_(_ascent_direction(grad, norm), alpha=alpha)
                delta.copy_(project(delta, eps, norm))
    if trace:
        with torch.no_grad():
            losses[steps] = float(F.cross_entropy(head.logits(x0 + delta), goal, reduction="sum"))
    return losses


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AttackPoint:
    """One budget of an attack on a whole set.

    ``eps`` is in the attacked space's units (raw feature units, or pixels in [0, 1] for image
    attacks); ``eps_rel = eps / eps_scale`` when a scale is defined (feature space). Norms of the
    perturbation are in the attack's norm; ``feature_shift`` is the L2 distance between perturbed
    and clean features (equal to ``||delta||_2`` in feature space).
    """

    eps: float
    eps_rel: float | None
    alpha: float
    top1: float
    success_rate: float
    mean_delta_norm: float
    max_delta_norm: float
    mean_feature_shift: float
    mean_loss_clean: float
    mean_loss_adv: float
    predictions: np.ndarray = field(repr=False)
    delta_norms: np.ndarray = field(repr=False)
    loss_clean: np.ndarray = field(repr=False)
    loss_adv: np.ndarray = field(repr=False)
    loss_trace: tuple[float, ...] = field(default=(), repr=False)
    delta: np.ndarray | None = field(default=None, repr=False)
    pixel_range: tuple[float, float] | None = None  # (min, max) adversarial pixel (image space)

    def row(self) -> dict[str, Any]:
        """The JSON sweep entry: ``eps, top1, success_rate, mean_delta_norm`` and extras."""
        return {
            "eps": self.eps,
            "eps_rel": self.eps_rel,
            "alpha": self.alpha,
            "top1": self.top1,
            "success_rate": self.success_rate,
            "mean_delta_norm": self.mean_delta_norm,
            "max_delta_norm": self.max_delta_norm,
            "mean_feature_shift": self.mean_feature_shift,
            "mean_loss_clean": self.mean_loss_clean,
            "mean_loss_adv": self.mean_loss_adv,
            **({"pixel_range": list(self.pixel_range)} if self.pixel_range is not None else {}),
        }


@dataclass(frozen=True)
class PerturbSweep:
    """Accuracy of one probe on one set under a list of budgets (plus the clean accuracy)."""

    space: str  # "feature" or "image"
    norm: str
    steps: int
    random_start: bool
    target: str
    eps_mode: str  # "absolute" (feature or pixel units) or "relative" (fraction of eps_scale)
    eps_scale: float | None  # mean feature norm in the attack's norm (feature space), else None
    clean_top1: float
    n: int
    points: tuple[AttackPoint, ...]
    clean_predictions: np.ndarray = field(repr=False)
    targets: np.ndarray | None = field(default=None, repr=False)
    seed: int = 0

    def metrics(self) -> dict[str, Any]:
        return {"clean_top1": self.clean_top1, "sweep": [p.row() for p in self.points]}

    def settings(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "norm": self.norm,
            "steps": self.steps,
            "alpha": [p.alpha for p in self.points],
            "alpha_rule": f"{ALPHA_FACTOR} * eps / steps unless given",
            "random_start": self.random_start,
            "target": self.target,
            "eps_mode": self.eps_mode,
            "eps_units": (
                "pixels in [0, 1]" if self.space == "image"
                else "raw feature units (before any normalisation inside the probe)"
            ),
            "eps_scale": self.eps_scale,
            "eps_scale_rule": (
                f"mean ||x||_{'inf' if self.norm == 'linf' else '2'} of the attacked features"
                if self.eps_scale is not None else None
            ),
            "success_rule": (
                "fraction of clean-correct samples misclassified after the attack"
                if self.target == "none"
                else "fraction of all samples predicted as their target after the attack"
            ),
            "seed": self.seed,
            "n": self.n,
        }


def success_rate(
    clean_predictions: np.ndarray, adv_predictions: np.ndarray, labels: np.ndarray,
    targets: np.ndarray | None,
) -> float:
    """See the module docstring; NaN when no sample qualifies."""
    if targets is not None:
        return float(np.mean(adv_predictions == targets)) if len(labels) else math.nan
    correct = clean_predictions == labels
    if not correct.any():
        return math.nan
    return float(np.mean(adv_predictions[correct] != labels[correct]))


# --------------------------------------------------------------------------- feature-space API


def _check_inputs(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise FeatkitError(
            f"features must be N x D and labels N; got {x.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise FeatkitError(f"labels must be integer class ids, got {y.dtype}")
    check_finite(x, "attacked features")
    return x, y.astype(np.int64)


def _logits_in_chunks(head: LogitHead, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([head.logits(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def eps_sweep(
    head: LogitHead,
    features: np.ndarray,
    labels: np.ndarray,
    eps_values: Sequence[float],
    *,
    norm: str = PGD_NORM,
    eps_rel: bool = False,
    steps: int = PGD_STEPS,
    alpha: float | None = None,
    random_start: bool = False,
    target: str = PGD_TARGET,
    seed: int = 0,
    keep_delta: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
    progress: bool = True,
) -> PerturbSweep:
    """Attack the whole set once per budget in ``eps_values`` and score the probe each time.

    With ``eps_rel`` the budgets (and ``alpha``, if given) are fractions of :func:`eps_scale`.
    ``alpha`` defaults to ``2.5 * eps / steps`` per budget. Targets (targeted modes) are chosen
    once from the clean logits; random starts and random targets are seeded by ``seed`` and the
    same for every budget. ``keep_delta`` stores each budget's ``N x D`` perturbation.
    """
    norm, target = check_norm(norm), check_target(target)
    x_np, y_np = _check_inputs(features, labels)
    if steps < 0:
        raise FeatkitError(f"steps must be non-negative, got {steps}")
    values = [float(e) for e in eps_values]
    if not values:
        raise FeatkitError("no budgets to sweep: pass at least one eps")
    if any(not math.isfinite(e) or e < 0 for e in values):
        raise FeatkitError(f"eps values must be finite and non-negative; got {values}")
    if alpha is not None and not (math.isfinite(alpha) and alpha >= 0):
        raise FeatkitError(f"alpha must be finite and non-negative; got {alpha}")
    dev, dt = torch_device(device), resolve_dtype(dtype)
    scale = eps_scale(x_np, norm)
    unit = scale if eps_rel else 1.0
    x = torch.as_tensor(np.ascontiguousarray(x_np), dtype=dt, device=dev)
    y = torch.as_tensor(y_np, device=dev)

    clean_logits = _logits_in_chunks(head, x)
    if clean_logits.ndim != 2 or clean_logits.shape[0] != len(x):
        raise FeatkitError(f"the probe returned logits of shape {tuple(clean_logits.shape)}")
    if len(y_np) and (y_np.min() < 0 or y_np.max() >= clean_logits.shape[1]):
        raise FeatkitError(
            f"labels span {y_np.min()}..{y_np.max()} but the probe has {clean_logits.shape[1]} "
            "classes; use the probe trained on this dataset"
        )
    clean_pred = clean_logits.argmax(dim=1).cpu().numpy()
    loss_clean = _per_sample_loss(clean_logits, y).cpu().numpy().astype(np.float64)
    targets_np = choose_targets(clean_logits, y_np, target, seed)
    targets = None if targets_np is None else torch.as_tensor(targets_np, device=dev)
    clean_top1 = float(np.mean(clean_pred == y_np)) if len(y_np) else math.nan

    points = []
    bar = progress_bar(values, progress, f"PGD {norm} eps sweep")
    for value in bar:
        eps_abs = value * unit
        step = default_alpha(eps_abs, steps) if alpha is None else alpha * unit
        generator = torch.Generator(device=dev).manual_seed(seed)
        trace: list[float] = []
        delta = pgd(head, x, y, eps=eps_abs, steps=steps, alpha=step, norm=norm,
                    random_start=random_start, targets=targets, generator=generator,
                    loss_trace=trace)
        adv_logits = _logits_in_chunks(head, x + delta)
        adv_pred = adv_logits.argmax(dim=1).cpu().numpy()
        loss_adv = _per_sample_loss(adv_logits, y).cpu().numpy().astype(np.float64)
        norms = feature_norms(delta, norm)
        shift = feature_norms(delta, "l2")
        points.append(AttackPoint(
            eps=eps_abs,
            eps_rel=eps_abs / scale if scale > 0 else None,
            alpha=step,
            top1=float(np.mean(adv_pred == y_np)) if len(y_np) else math.nan,
            success_rate=success_rate(clean_pred, adv_pred, y_np, targets_np),
            mean_delta_norm=float(norms.mean()) if len(norms) else math.nan,
            max_delta_norm=float(norms.max()) if len(norms) else math.nan,
            mean_feature_shift=float(shift.mean()) if len(shift) else math.nan,
            mean_loss_clean=float(loss_clean.mean()) if len(y_np) else math.nan,
            mean_loss_adv=float(loss_adv.mean()) if len(y_np) else math.nan,
            predictions=adv_pred,
            delta_norms=norms,
            loss_clean=loss_clean,
            loss_adv=loss_adv,
            loss_trace=tuple(trace),
            delta=delta.cpu().numpy() if keep_delta else None,
        ))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(eps=f"{eps_abs:.3g}", top1=f"{points[-1].top1:.4f}")
    return PerturbSweep(
        space="feature",
        norm=norm,
        steps=steps,
        random_start=random_start,
        target=target,
        eps_mode="relative" if eps_rel else "absolute",
        eps_scale=scale,
        clean_top1=clean_top1,
        n=len(y_np),
        points=tuple(points),
        clean_predictions=clean_pred,
        targets=targets_np,
        seed=seed,
    )


def perturb_features(
    head: LogitHead,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    eps: float,
    **options: Any,
) -> tuple[float, AttackPoint]:
    """One budget: ``(clean_top1, point)`` with the perturbation kept (``point.delta``).

    Options as for :func:`eps_sweep`."""
    options.setdefault("keep_delta", True)
    options.setdefault("progress", False)
    sweep = eps_sweep(head, features, labels, [eps], **options)
    return sweep.clean_top1, sweep.points[0]
