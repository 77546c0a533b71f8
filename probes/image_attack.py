"""Image-space PGD through a feature extractor and a linear probe, with torchattacks.

The attacked model is ``normalised image -> extractor features -> probe logits``. Pixels live in
[0, 1] and the budget ``eps`` is in pixel units (e.g. 1/255 ... 8/255); torchattacks' ``PGD`` /
``PGDL2`` keep every pixel in [0, 1] and within eps of the original.

torchattacks' normalisation convention (3.5.1, ``Attack.set_normalization_used(mean, std)``):
the attack is *called with normalised images* (what the extractor's transform produces) and
returns normalised adversarial images; internally it un-normalises to [0, 1], takes its steps and
clamps there, and normalises again before every call of the model. So the wrapped model takes
**normalised** images, exactly like the extractor's own forward. (Giving it [0, 1] pixels while
the normalisation is set would un-normalise pixels that were never normalised.)

A budget of 0 is the clean evaluation itself (no round trip through torchattacks' normalisation,
whose float rounding would otherwise perturb the features by ~1e-7).

Nothing here knows an extractor: the attack takes a differentiable feature function and the
pixel normalisation (``extractor.differentiable_features(kind)`` and
``extractor.pixel_normalization()`` give both for the families that support it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from featkit.errors import FeatkitError
from probes.perturb import (
    AttackPoint,
    LogitHead,
    PerturbSweep,
    check_norm,
    check_target,
    choose_targets,
    default_alpha,
    success_rate,
)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
#: How far un-normalised clean images may stray outside [0, 1] before we call the mean/std wrong.
PIXEL_RANGE_TOLERANCE = 1e-4


# --------------------------------------------------------------------------- the model path


class ImageProbe(torch.nn.Module):
    """``normalised images -> probe logits`` as the ``nn.Module`` torchattacks attacks."""

    def __init__(self, features: FeatureFn, head: LogitHead, device: str | torch.device = "cpu"):
        super().__init__()
        self.features = features
        self.head = head
        # torchattacks takes its device from the model's first parameter
        self.device_anchor = torch.nn.Parameter(torch.zeros(0, device=device), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.logits(self.features(images))


def _stats(mean: Sequence[float], std: Sequence[float], device) -> tuple[torch.Tensor, torch.Tensor]:
    # torchattacks' own shapes and op order, so un-normalising here matches its internal pixels
    c = len(mean)
    return (torch.tensor(mean).reshape(1, c, 1, 1).to(device),
            torch.tensor(std).reshape(1, c, 1, 1).to(device))


def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images back to [0, 1] pixels (``x * std + mean``, torchattacks' formula)."""
    m, s = _stats(mean, std, images.device)
    return images * s + m


def attack_batch(
    model: ImageProbe,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "linf",
    random_start: bool = False,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalised adversarial images for one batch of normalised images (torchattacks ``PGD`` or
    ``PGDL2`` with ``set_normalization_used(mean, std)``; targeted towards ``targets`` if given)."""
    import torchattacks

    norm = check_norm(norm)
    alpha = default_alpha(eps, steps) if alpha is None else float(alpha)
    attack_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    attack = attack_cls(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    attack.set_normalization_used(mean=list(mean), std=list(std))
    if targets is not None:
        attack.set_mode_targeted_by_label(quiet=True)
    return attack(images, labels if targets is None else targets).detach()


def _as_batch(images: Any, device) -> torch.Tensor:
    batch = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if batch.ndim != 4:
        raise FeatkitError(f"images must be N x C x H x W; got shape {tuple(batch.shape)}")
    return batch.to(device=device, dtype=torch.float32)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not enabled)


def image_eps_sweep(
    features: FeatureFn,
    head: LogitHead,
    images: Any,
    labels: np.ndarray,
    eps_values: Sequence[float],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    norm: str = "linf",
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = False,
    target: str = "none",
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[PerturbSweep, np.ndarray]:
    """Attack every image once per pixel budget, recompute features, score the same probe.

    ``images``: normalised ``N x C x H x W`` images (an array, a tensor, or any object with
    ``len()`` whose slices give such batches, so a dataset can be decoded lazily). Returns the
    sweep (``space="image"``; ``mean_delta_norm`` in pixel units, ``mean_feature_shift`` the
    feature-space L2 distance it caused) and the clean features recomputed through ``features``
    (compare them with the cached ones). Random starts are seeded by ``seed`` (torch's global
    generator is forked, so the caller's stream is untouched); targets are chosen once from the
    clean logits, as in :func:`probes.perturb.eps_sweep`. ``alpha`` defaults to
    ``2.5 * eps / steps`` per budget (torchattacks' 2/255 at eps 8/255, 10 steps).
    """
    norm, target = check_norm(norm), check_target(target)
    y_np = np.asarray(labels, dtype=np.int64)
    values = [float(e) for e in eps_values]
    if not values or any(not math.isfinite(e) or e < 0 for e in values):
        raise FeatkitError(f"eps values must be a non-empty list of non-negative numbers; got {values}")
    if len(images) != len(y_np):
        raise FeatkitError(f"{len(images)} images but {len(y_np)} labels")
    if batch_size < 1 or steps < 0:
        raise FeatkitError("batch size must be positive and steps non-negative")
    n = len(y_np)
    starts = range(0, n, batch_size)

    if n and any(e > 0 for e in values):  # fail before the clean pass if there is no gradient
        probe_image = _as_batch(images[0:1], device).requires_grad_(True)
        with torch.enable_grad():
            if not features(probe_image).requires_grad:
                raise FeatkitError(
                    "the feature function computes its features without gradients, so an "
                    "image-space attack cannot run through it; use --space feature"
                )

    # pass 1: clean features, logits, and a check that mean/std map the images into [0, 1]
    clean_feats, clean_logits = [], []
    low, high = math.inf, -math.inf
    with torch.no_grad(), _progress(n, progress, "clean features") as bar:
        for start in starts:
            batch = _as_batch(images[start : start + batch_size], device)
            pixels = to_pixels(batch, mean, std)
            low, high = min(low, float(pixels.min())), max(high, float(pixels.max()))
            f = features(batch)
            clean_feats.append(f.cpu())
            clean_logits.append(head.logits(f).cpu())
            bar.update(len(batch))
    if low < -PIXEL_RANGE_TOLERANCE or high > 1 + PIXEL_RANGE_TOLERANCE:
        raise FeatkitError(
            f"un-normalised with mean {tuple(mean)} / std {tuple(std)} the images span "
            f"[{low:.4g}, {high:.4g}], not [0, 1]: they were normalised with other statistics"
        )
    feats_clean = torch.cat(clean_feats)
    logits_clean = torch.cat(clean_logits)
    if logits_clean.shape[1] <= int(y_np.max(initial=0)):
        raise FeatkitError(f"labels reach {int(y_np.max())} but the probe has "
                           f"{logits_clean.shape[1]} classes")
    clean_pred = logits_clean.argmax(dim=1).numpy()
    y_t = torch.as_tensor(y_np)
    loss_clean = F.cross_entropy(logits_clean, y_t, reduction="none").double().numpy()
    targets_np = choose_targets(logits_clean, y_np, target, seed)
    clean_top1 = float(np.mean(clean_pred == y_np)) if n else math.nan

    # pass 2: every budget on each batch (images decoded once more)
    model = ImageProbe(features, head, device)
    attacked = [e for e in values if e > 0]
    preds = {e: clean_pred.copy() for e in values}
    losses = {e: loss_clean.copy() for e in values}
    delta_norms = {e: np.zeros(n) for e in values}
    shifts = {e: np.zeros(n) for e in values}
    ranges = {e: [math.inf, -math.inf] for e in attacked}
    order = math.inf if norm == "linf" else 2
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _progress(n * len(attacked), progress,
                                                            f"PGD {norm} on images") as bar:
        torch.manual_seed(seed)
        for start in starts if attacked else ():
            batch = _as_batch(images[start : start + batch_size], device)
            rows = slice(start, start + len(batch))
            batch_labels = y_t[rows].to(device)
            batch_targets = None if targets_np is None else torch.as_tensor(
                targets_np[rows]).to(device)
            pixels = to_pixels(batch, mean, std)
            for eps in attacked:
                adv = attack_batch(model, batch, batch_labels, mean=mean, std=std, eps=eps,
                                   steps=steps, alpha=alpha, norm=norm, random_start=random_start,
                                   targets=batch_targets)
                with torch.no_grad():
                    adv_feats = features(adv)
                    adv_logits = head.logits(adv_feats).cpu()
                    adv_pixels = to_pixels(adv, mean, std)
                    delta = (adv_pixels - pixels).reshape(len(batch), -1).double()
                preds[eps][rows] = adv_logits.argmax(dim=1).numpy()
                losses[eps][rows] = F.cross_entropy(adv_logits, y_t[rows], reduction="none").numpy()
                delta_norms[eps][rows] = torch.linalg.vector_norm(delta, ord=order, dim=1).cpu().numpy()
                shifts[eps][rows] = torch.linalg.vector_norm(
                    (adv_feats.cpu() - feats_clean[rows]).double(), dim=1).numpy()
                ranges[eps] = [min(ranges[eps][0], float(adv_pixels.min())),
                               max(ranges[eps][1], float(adv_pixels.max()))]
                bar.update(len(batch))

    points = []
    for eps in values:
        step = default_alpha(eps, steps) if alpha is None else float(alpha)
        norms = delta_norms[eps]
        points.append(AttackPoint(
            eps=eps,
            eps_rel=None,
            alpha=step,
            top1=float(np.mean(preds[eps] == y_np)) if n else math.nan,
            success_rate=success_rate(clean_pred, preds[eps], y_np, targets_np),
            mean_delta_norm=float(norms.mean()) if n else math.nan,
            max_delta_norm=float(norms.max()) if n else math.nan,
            mean_feature_shift=float(shifts[eps].mean()) if n else math.nan,
            mean_loss_clean=float(loss_clean.mean()) if n else math.nan,
            mean_loss_adv=float(losses[eps].mean()) if n else math.nan,
            predictions=preds[eps],
            delta_norms=norms,
            loss_clean=loss_clean,
            loss_adv=losses[eps],
            pixel_range=tuple(ranges[eps]) if eps in ranges and n else None,
        ))
    sweep = PerturbSweep(
        space="image",
        norm=norm,
        steps=steps,
        random_start=random_start,
        target=target,
        eps_mode="absolute",
        eps_scale=None,
        clean_top1=clean_top1,
        n=n,
        points=tuple(points),
        clean_predictions=clean_pred,
        targets=targets_np,
        seed=seed,
    )
    return sweep, feats_clean.numpy()
