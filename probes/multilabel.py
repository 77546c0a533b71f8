"""Multi-label attribute probes: one logistic output per binary attribute (CUB's 312), trained
full-batch by L-BFGS, the L2 strength chosen on val per attribute group.

The loss is separable across attributes (each output has its own weights, its own mean binary
cross-entropy over the rows where it is labelled, and its own L2 term), so training all outputs
at once and choosing the strength per group from one shared sweep is exactly one probe per group
(e.g. CUB's 15 wing colours), each with its own choice. Scores: per-attribute ROC-AUC and
average precision (scikit-learn's definitions, :mod:`probes.binary`), their means over attributes
(macro-AUROC, mAP), per-attribute accuracy at probability 0.5, and per group the share of images
whose highest-scored value is one they show (the multiple-choice accuracy of FG-BMK Table 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes.binary import average_precision, roc_auc

#: L2 strengths swept, strongest first (per attribute: mean BCE + strength / 2 * |w|^2).
MULTILABEL_L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
MULTILABEL_MAX_ITER = 200
MULTILABEL_NORMALIZATION = "l2"
#: How each group's strength is chosen, as records state it.
MULTILABEL_SELECTION = "val macro-AUROC of the group's attributes (ties -> stronger L2)"


def per_attribute(metric, scores: np.ndarray, targets: np.ndarray,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """``metric(scores[:, a], targets[:, a])`` over the rows where ``mask[:, a]`` (all rows
    without a mask); NaN where a column lacks positives or negatives."""
    scores, targets = np.asarray(scores), np.asarray(targets, dtype=bool)
    mask = np.ones_like(targets) if mask is None else np.asarray(mask, dtype=bool)
    out = np.full(targets.shape[1], np.nan)
    for a in range(targets.shape[1]):  # a loop over attributes, each one vectorised
        rows = mask[:, a]
        column = targets[rows, a]
        if column.any() and not column.all():
            out[a] = metric(scores[rows, a], column)
    return out


def macro_auroc(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
                ) -> float:
    """Mean ROC-AUC over the attributes that have positives and negatives (scikit-learn's
    ``roc_auc_score(..., average="macro")`` on those columns)."""
    return float(np.nanmean(per_attribute(roc_auc, scores, targets, mask)))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray,
                           mask: np.ndarray | None = None) -> float:
    """Mean average precision over the attributes with positives and negatives."""
    return float(np.nanmean(per_attribute(average_precision, scores, targets, mask)))


def group_top1(scores: np.ndarray, targets: np.ndarray, columns: np.ndarray) -> tuple[float, int]:
    """``(accuracy, images)``: among the images that show at least one value of a group (its
    ``columns``), the share whose highest-scored value is one they show (ties: the first)."""
    shown = np.asarray(targets, dtype=bool)[:, columns]
    rows = shown.any(axis=1)
    if not rows.any():
        return float("nan"), 0
    best = np.argmax(np.asarray(scores)[rows][:, columns], axis=1)
    return float(np.mean(shown[rows][np.arange(rows.sum()), best])), int(rows.sum())


@dataclass(frozen=True)
class MultilabelFit:
    """The trained outputs (``weight`` A x D, ``bias`` A) on features normalised as
    ``normalization`` (mean/std for standardize), the strength chosen per group and the sweep."""

    weight: np.ndarray
    bias: np.ndarray
    normalization: str
    mean: np.ndarray | None
    std: np.ndarray | None
    attribute_groups: tuple[str, ...]
    chosen: dict[str, float]
    sweep: dict[str, list[dict[str, float]]]
    warnings: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups in order of first appearance."""
        return tuple(dict.fromkeys(self.attribute_groups))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Logits of every attribute for each row."""
        return _scores(features, self.weight, self.bias, self.normalization, self.mean, self.std)


def fit_multilabel_probe(
    train_features: np.ndarray,
    train_targets: np.ndarray,
    val_features: np.ndarray,
    val_targets: np.ndarray,
    *,
    groups: Sequence[str],
    train_mask: np.ndarray | None = None,
    val_mask: np.ndarray | None = None,
    l2_grid: Sequence[float] = MULTILABEL_L2_GRID,
    normalization: str = MULTILABEL_NORMALIZATION,
    max_iter: int = MULTILABEL_MAX_ITER,
    device: str | None = None,
) -> MultilabelFit:
    """Sweep the L2 strength (strongest first, each fit warm-started from the previous) and keep,
    for each group of attributes (``groups[a]`` names attribute ``a``'s group), the outputs of
    the strength with the best val macro-AUROC. Masks say which labels count (e.g. CUB
    certainties); no test data goes in."""
    import torch

    from featkit._device import torch_device
    from probes.linear.head import normalization_stats, normalize_tensor

    train_y = np.asarray(train_targets, dtype=bool)
    val_y = np.asarray(val_targets, dtype=bool)
    n_attr = train_y.shape[1]
    if len(groups) != n_attr or val_y.shape[1] != n_attr:
        raise FeatkitError(f"{n_attr} attributes in train, {val_y.shape[1]} in val and "
                           f"{len(groups)} group names")
    check_finite(train_features, "train features")
    check_finite(val_features, "val features")
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    if not grid or grid[-1] <= 0:
        raise FeatkitError(f"the L2 grid must hold positive values, got {list(l2_grid)}")
    dev = torch_device(device)
    mean, std = normalization_stats(np.asarray(train_features, dtype=np.float32), normalization)
    t_mean = None if mean is None else torch.as_tensor(mean, device=dev)
    t_std = None if std is None else torch.as_tensor(std, device=dev)
    x = normalize_tensor(torch.as_tensor(np.asarray(train_features, np.float32), device=dev),
                         normalization, t_mean, t_std)
    y = torch.as_tensor(train_y, dtype=torch.float32, device=dev)
    m = torch.ones_like(y) if train_mask is None else torch.as_tensor(
        np.asarray(train_mask, dtype=bool), dtype=torch.float32, device=dev)
    rows = m.sum(dim=0).clamp_min(1)
    weight = torch.zeros(n_attr, x.shape[1], device=dev, requires_grad=True)
    bias = torch.zeros(n_attr, device=dev, requires_grad=True)
    group_names = tuple(dict.fromkeys(groups))
    group_columns = {g: np.flatnonzero(np.asarray(groups) == g) for g in group_names}
    best: dict[str, tuple[float, float]] = {}
    kept_w = np.zeros((n_attr, x.shape[1]), dtype=np.float32)
    kept_b = np.zeros(n_attr, dtype=np.float32)
    sweep: dict[str, list[dict[str, float]]] = {g: [] for g in group_names}
    stopped = []
    def objective(strength: float):
        def closure() -> torch.Tensor:
            weight.grad, bias.grad = None, None
            logits = x @ weight.T + bias
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y,
                                                                       reduction="none")
            loss = ((bce * m).sum(dim=0) / rows).sum() + strength / 2 * (weight ** 2).sum()
            loss.backward()
            return loss
        return closure

    for strength in grid:  # warm start: each fit begins at the previous solution
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, history_size=10,
                                      tolerance_grad=1e-6, tolerance_change=1e-10,
                                      line_search_fn="strong_wolfe")
        optimizer.step(objective(strength))
        if optimizer.state[weight]["n_iter"] >= max_iter:
            stopped.append(strength)
        fit_w, fit_b = weight.detach().cpu().numpy(), bias.detach().cpu().numpy()
        val_scores = _scores(val_features, fit_w, fit_b, normalization, mean, std)
        aurocs = per_attribute(roc_auc, val_scores, val_y, val_mask)
        for g, columns in group_columns.items():
            score = float(np.nanmean(aurocs[columns])) if np.isfinite(aurocs[columns]).any() \
                else float("nan")
            sweep[g].append({"l2": strength, "val_macro_auroc": score})
            if g not in best or np.nan_to_num(score, nan=-1.0) > best[g][1]:
                best[g] = (strength, np.nan_to_num(score, nan=-1.0))
                kept_w[columns], kept_b[columns] = fit_w[columns], fit_b[columns]
    warnings = []
    edges = [g for g, (s, _) in best.items() if len(grid) > 1 and s in (grid[0], grid[-1])]
    if edges:
        warnings.append(f"the chosen L2 strength is at the edge of the grid [{grid[-1]:g}, "
                        f"{grid[0]:g}] for {len(edges)} of {len(best)} groups (e.g. {edges[0]}); "
                        "widen the grid")
    if stopped:
        warnings.append(f"L-BFGS stopped at max_iter = {max_iter} before its tolerance at L2 = "
                        f"{', '.join(f'{s:g}' for s in stopped)}; raise max_iter")
    return MultilabelFit(kept_w, kept_b, normalization, mean, std, tuple(groups),
                         {g: s for g, (s, _) in best.items()}, sweep, tuple(warnings))


def _scores(features, weight, bias, normalization, mean, std) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if normalization == "l2":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif normalization == "standardize":
        x = (x - mean) / std
    return (x @ weight.T + bias).astype(np.float64)


@dataclass(frozen=True)
class MultilabelResult:
    """Test scores of a :class:`MultilabelFit`: per attribute and per group."""

    names: tuple[str, ...]
    groups: tuple[str, ...]
    auroc: np.ndarray
    average_precision: np.ndarray
    accuracy: np.ndarray
    positives: np.ndarray
    labelled: np.ndarray
    group_scores: dict[str, dict[str, float]]
    fit: MultilabelFit

    def metrics(self) -> dict[str, float]:
        """Macro-AUROC, mAP (over attributes with both classes in test) and the mean of the
        groups' top-1 accuracies."""
        tops = [g["top1"] for g in self.group_scores.values() if np.isfinite(g["top1"])]
        return {"macro_auroc": float(np.nanmean(self.auroc)),
                "map": float(np.nanmean(self.average_precision)),
                "mean_group_top1": float(np.mean(tops)) if tops else float("nan")}

    def per_attribute_table(self) -> list[dict[str, Any]]:
        return [{"attribute": n, "group": g, "auroc": a, "ap": p, "accuracy": c,
                 "positives": int(k), "labelled": int(n_l)}
                for n, g, a, p, c, k, n_l in zip(self.names, self.groups, self.auroc,
                                                  self.average_precision, self.accuracy,
                                                  self.positives, self.labelled)]


def multilabel_statistics(attribute_groups: Sequence[str], test_targets: np.ndarray,
                          test_mask: np.ndarray | None = None) -> dict[str, Any]:
    """The test metrics of :meth:`MultilabelResult.metrics` as functions of per-image
    ``(scores, targets, mask)`` (images x attributes), to be recomputed on resampled images.
    ``attribute_groups[a]``: attribute ``a``'s group.

    The attributes (and groups) averaged over are fixed to those defined on the test set as
    given (``test_targets`` and ``test_mask``: positives and negatives among the labelled rows;
    a group: some image showing one of its values), the ones the reported metrics average
    over. An attribute or group undefined on a resample makes the statistic NaN rather than
    dropping out of the mean, which would average over another set of attributes."""
    targets = np.asarray(test_targets, dtype=bool)
    mask = np.ones_like(targets) if test_mask is None else np.asarray(test_mask, dtype=bool)
    labelled = np.where(mask, targets, False)
    defined = np.flatnonzero(labelled.any(axis=0) & (mask & ~targets).any(axis=0))
    group_of = np.asarray(attribute_groups)
    columns = [np.flatnonzero(group_of == g) for g in dict.fromkeys(attribute_groups)]
    shown = [c for c in columns if labelled[:, c].any()]

    def over_defined(metric):
        def statistic(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
            if not defined.size:
                return float("nan")
            return float(np.mean(per_attribute(metric, scores[:, defined], targets[:, defined],
                                               mask[:, defined])))
        return statistic

    def mean_group_top1(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
        if not shown:
            return float("nan")
        return float(np.mean([group_top1(scores, targets & mask, c)[0] for c in shown]))

    return {"macro_auroc": over_defined(roc_auc), "map": over_defined(average_precision),
            "mean_group_top1": mean_group_top1}


def evaluate_multilabel_probe(fit: MultilabelFit, test_features: np.ndarray,
                              test_targets: np.ndarray, names: Sequence[str], *,
                              test_mask: np.ndarray | None = None) -> MultilabelResult:
    """Score the fitted outputs once on test."""
    check_finite(test_features, "test features")
    targets = np.asarray(test_targets, dtype=bool)
    mask = np.ones_like(targets) if test_mask is None else np.asarray(test_mask, dtype=bool)
    if targets.shape[1] != len(names) or len(names) != len(fit.attribute_groups):
        raise FeatkitError(f"{targets.shape[1]} test attributes, {len(names)} names and "
                           f"{len(fit.attribute_groups)} trained outputs")
    scores = fit.scores(test_features)
    group_of = np.asarray(fit.attribute_groups)
    accuracy = np.asarray([np.mean((scores[mask[:, a], a] > 0) == targets[mask[:, a], a])
                           if mask[:, a].any() else np.nan for a in range(len(names))])
    auroc = per_attribute(roc_auc, scores, targets, mask)
    ap = per_attribute(average_precision, scores, targets, mask)
    group_scores = {}
    for g in fit.groups:
        columns = np.flatnonzero(group_of == g)
        top1, images = group_top1(scores, targets & mask, columns)
        group_scores[g] = {"top1": top1, "images": images,
                           "macro_auroc": float(np.nanmean(auroc[columns]))
                           if np.isfinite(auroc[columns]).any() else float("nan"),
                           "map": float(np.nanmean(ap[columns]))
                           if np.isfinite(ap[columns]).any() else float("nan"),
                           "l2": fit.chosen[g]}
    return MultilabelResult(tuple(names), tuple(group_of), auroc, ap, accuracy,
                            (targets & mask).sum(axis=0), mask.sum(axis=0), group_scores, fit)

