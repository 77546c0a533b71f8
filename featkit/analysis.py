"""Notebook-level analyses: does alignment cost fine-grained discriminability?

:func:`compare_kinds` loads two (or more) feature kinds of one model from the cache — by default
the vision tower's ``visual`` output and the text-aligned ``aligned`` embedding — and runs the
same probes on each through the ``probes`` API:

- linear probe (C chosen on val, refit on train + val, scored once on test) -> top-1,
  mean per-class accuracy and the per-class accuracies (FG-BMK Fig. 3's "knowledge bias");
- leave-one-out retrieval on test (cosine, exact full ranking) -> mAP, mAP@R, P@1;
- PGD on the test features against that linear probe, budgets relative to the mean feature
  norm (L2 by default, so spaces of different width and scale compare fairly) -> accuracy vs eps;
- a 2-D PCA of a few classes' L2-normalised test features.

Everything comes back as tidy tables (pandas) plus result records in the shape of
:func:`featkit.results.make_result`, so ``featkit.reporting.report(comparison.records)`` works on them too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError
from probes.defaults import LINEAR_NORMALIZATION, PGD_STEPS

if TYPE_CHECKING:
    import pandas as pd

#: Default PGD budgets as fractions of the mean feature norm.
DEFAULT_EPS_REL = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)

#: Headline metrics of :meth:`KindComparison.table`, in display order.
HEADLINE = ("linear_top1", "retrieval_mAP")


@dataclass
class KindComparison:
    """Results of :func:`compare_kinds` (accuracies as fractions).

    ``summary``: dataset, kind, dim, n_test, metric, value (long); ``curves``: dataset, kind, eps_rel,
    eps, top1, success_rate; ``per_class``: dataset, kind, class, accuracy; ``pca``: dataset,
    kind, class, x, y, explained; ``records``: result records (linear_probe, retrieval,
    perturb) for :func:`featkit.reporting.report`."""

    model: str
    datasets: tuple[str, ...]
    kinds: tuple[str, ...]
    summary: pd.DataFrame
    curves: pd.DataFrame
    per_class: pd.DataFrame
    pca: pd.DataFrame
    records: list[dict[str, Any]] = field(default_factory=list)
    weights: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Wide table: one row per (dataset, kind), one column per metric (fractions)."""
        wide = self.summary.pivot_table(index=["dataset", "kind"], columns="metric",
                                        values="value", aggfunc="first", sort=False)
        columns = list(metrics) if metrics is not None else [
            m for m in dict.fromkeys(self.summary["metric"]) if m in wide.columns]
        return wide[columns]

    def percent_table(self) -> pd.DataFrame:
        """:meth:`table` for reading: accuracies in percent (2 decimals), the PGD budget that
        halves top-1 (``pgd_eps50_rel``, a fraction of the feature norm) as is."""
        table = self.table()
        accuracies = [c for c in table.columns if not c.startswith("pgd_")]
        out = table.copy()
        out[accuracies] = (100.0 * table[accuracies]).round(2)
        return out

    def value(self, dataset: str, kind: str, metric: str) -> float:
        part = self.summary[(self.summary["dataset"] == dataset) & (self.summary["kind"] == kind)
                            & (self.summary["metric"] == metric)]
        return float(part["value"].iloc[0]) if len(part) else math.nan

    def reading(self) -> str:
        """A short Markdown reading of the numbers (see :func:`describe`)."""
        return describe(self)


def eps_at_fraction(eps: Sequence[float], top1: Sequence[float], clean: float,
                    fraction: float = 0.5) -> float:
    """The smallest budget at which accuracy falls to ``fraction * clean``, linearly
    interpolated between sweep points; NaN if the sweep never gets there."""
    target = fraction * clean
    points = sorted(zip(eps, top1))
    previous = (0.0, clean)
    for e, t in points:
        if t <= target:
            e0, t0 = previous
            if t0 == t:
                return float(e)
            return float(e0 + (e - e0) * (t0 - target) / (t0 - t))
        previous = (e, t)
    return math.nan


def pca_2d(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
           classes: Sequence[str] | int = 5, *, normalize: bool = True) -> pd.DataFrame:
    """2-D PCA (scikit-learn) of the rows whose class is in ``classes`` (names, or the first n
    classes present). Columns x, y, class, explained (variance ratio of PC1 + PC2)."""
    import pandas as pd
    from sklearn.decomposition import PCA

    labels = np.asarray(labels)
    names = np.asarray(class_names, dtype=object)
    if isinstance(classes, int):
        present = [int(c) for c in np.unique(labels)][:classes]
    else:
        lookup = {str(n): i for i, n in enumerate(class_names)}
        unknown = [c for c in classes if str(c) not in lookup]
        if unknown:
            raise FeatkitError(f"PCA classes not in the dataset: {', '.join(map(str, unknown))}")
        present = [lookup[str(c)] for c in classes]
    rows = np.isin(labels, present)
    x = np.asarray(features, dtype=np.float64)[rows]
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if len(x) < 2:
        raise FeatkitError("PCA needs at least two samples of the chosen classes")
    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(x)
    frame = pd.DataFrame({"label": labels[rows], "x": xy[:, 0], "y": xy[:, 1],
                          "class": names[labels[rows]].astype(str),
                          "explained": float(pca.explained_variance_ratio_.sum())})
    order = {c: i for i, c in enumerate(present)}  # rows grouped by class, in class order
    frame = frame.sort_values("label", key=lambda col: col.map(order), kind="stable")
    return frame.drop(columns="label").reset_index(drop=True)


def compare_kinds(
    model: str,
    datasets: str | Sequence[str],
    kinds: Sequence[str] = ("visual", "aligned"),
    *,
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    adapter: str | None = None,
    eps_rel: Sequence[float] = DEFAULT_EPS_REL,
    norm: str = "l2",
    steps: int = PGD_STEPS,
    pca_classes: Sequence[str] | int = 5,
    normalization: str = LINEAR_NORMALIZATION,
    c_grid: Sequence[float] | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> KindComparison:
    """Run the linear probe, leave-one-out retrieval and a PGD sweep on each feature kind of
    ``model`` for each dataset (features must be in the cache: run :func:`featkit.extract`
    first). See the module docstring for the protocol."""
    import pandas as pd

    from featkit.tasks import linear, perturb, retrieval
    from featkit.tasks.loading import FeatureSource

    names = [datasets] if isinstance(datasets, str) else list(datasets)
    if not names or not kinds:
        raise FeatkitError("compare_kinds needs at least one dataset and one feature kind")
    probe_settings = linear.Settings(normalization=normalization,
                                     c_grid=None if c_grid is None else tuple(c_grid),
                                     seed=seed, device=device)
    attack_settings = perturb.Settings(norm=norm, eps=tuple(eps_rel), eps_rel=True, steps=steps,
                                       seed=seed, normalization=normalization,
                                       c_grid=probe_settings.c_grid, device=device or "auto")
    summary, curves, per_class, pcas, records = [], [], [], [], []
    weights_id = ""
    for dataset in names:
        for kind in kinds:
            source = FeatureSource(model, kind, weights=weights, adapter=adapter,
                                   cache_dir=cache_dir)
            probed = linear.run(source, [dataset], probe_settings, progress=progress)
            probe_record = probed.records[0]
            retrieval_record = retrieval.run(source, dataset, progress=progress)
            attacked = perturb.run(source, dataset, attack_settings,
                                   fit=probed.fits[dataset], progress=progress)
            test = source.load(dataset, "test")
            weights_id = str(test.meta.get("weights") or weights_id)
            sweep = attacked.sweep
            probe_metrics, retrieval_metrics = probe_record["metrics"], retrieval_record["metrics"]
            rows = [
                ("linear_top1", probe_metrics["top1"]),
                ("linear_mean_per_class", probe_metrics["mean_per_class"]),
                ("retrieval_mAP", retrieval_metrics["mAP"]),
                ("retrieval_mAP@R", retrieval_metrics["mAP@R"]),
                ("retrieval_P@1", retrieval_metrics["P@1"]),
                ("pgd_eps50_rel", eps_at_fraction([p.eps_rel for p in sweep.points],
                                                  [p.top1 for p in sweep.points],
                                                  sweep.clean_top1)),
            ]
            summary += [{"dataset": dataset, "kind": kind, "dim": int(test.features.shape[1]),
                         "n_test": len(test.labels), "metric": m, "value": float(v)}
                        for m, v in rows]
            curves += [{"dataset": dataset, "kind": kind, "eps_rel": p.eps_rel, "eps": p.eps,
                        "top1": p.top1, "success_rate": p.success_rate} for p in sweep.points]
            per_class += [{"dataset": dataset, "kind": kind, "class": c, "accuracy": a}
                          for c, a in probe_record["per_class"].items()]
            pcas.append(pca_2d(test.features, test.labels, test.class_names, pca_classes)
                        .assign(dataset=dataset, kind=kind))
            records += [probe_record, retrieval_record, attacked.record]
    pca = pd.concat(pcas, ignore_index=True)
    return KindComparison(
        model=model,
        datasets=tuple(names),
        kinds=tuple(kinds),
        summary=pd.DataFrame(summary),
        curves=pd.DataFrame(curves),
        per_class=pd.DataFrame(per_class),
        pca=pca[["dataset", "kind", "class", "x", "y", "explained"]],
        records=records,
        weights=weights_id,
        settings={"eps_rel": list(eps_rel), "norm": norm, "steps": steps,
                  "normalization": normalization, "seed": seed},
    )


def _pts(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def describe(comparison: KindComparison) -> str:
    """A short Markdown reading: per dataset, each kind's linear top-1 and mAP, the gap
    between the first kind and each other kind, robustness to PGD (the budget that halves
    accuracy) and the spread of per-class accuracy. Flags random (untrained) weights."""
    lines = []
    first, others = comparison.kinds[0], comparison.kinds[1:]
    if comparison.weights.startswith("random"):
        lines.append(
            f"> **{comparison.model} has random weights ({comparison.weights})**: these numbers "
            "exercise the pipeline and say nothing about alignment. Set `MODEL` to a real "
            "checkpoint to answer the question."
        )
        lines.append("")
    for dataset in comparison.datasets:
        lines.append(f"**{dataset}**")
        lines.append("")
        for kind in comparison.kinds:
            dim = comparison.summary.query("dataset == @dataset and kind == @kind")["dim"].iloc[0]
            eps50 = comparison.value(dataset, kind, "pgd_eps50_rel")
            per = comparison.per_class.query("dataset == @dataset and kind == @kind")["accuracy"]
            halves = (f"accuracy halves at ε ≈ {eps50:.3g}·‖x‖" if math.isfinite(eps50)
                      else "accuracy never halves within the sweep")
            lines.append(
                f"- `{kind}` ({dim}-d): linear top-1 {_pts(comparison.value(dataset, kind, 'linear_top1'))}, "
                f"retrieval mAP {_pts(comparison.value(dataset, kind, 'retrieval_mAP'))}; "
                f"{halves}; per-class accuracy ranges {_pts(per.min())}–{_pts(per.max())}."
            )
        for kind in others:
            gaps = []
            for metric, label in (("linear_top1", "linear top-1"), ("retrieval_mAP", "mAP")):
                delta = comparison.value(dataset, kind, metric) - comparison.value(
                    dataset, first, metric)
                gaps.append(f"{label} {100 * delta:+.1f} points")
            verdict = _verdict(comparison, dataset, first, kind)
            lines.append(f"- `{kind}` vs `{first}`: {', '.join(gaps)}. {verdict}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _verdict(comparison: KindComparison, dataset: str, first: str, kind: str) -> str:
    """Call a difference only when the top-1 gap exceeds two standard errors of the difference
    of two accuracies on n test images and mAP moves the same way."""
    a = comparison.value(dataset, first, "linear_top1")
    b = comparison.value(dataset, kind, "linear_top1")
    map_gap = comparison.value(dataset, kind, "retrieval_mAP") - comparison.value(
        dataset, first, "retrieval_mAP")
    n = int(comparison.summary.query("dataset == @dataset and kind == @kind")["n_test"].iloc[0])
    se = math.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1))
    noise = f"2 standard errors on {n} test images = {200 * se:.1f} points"
    if abs(b - a) <= 2 * se:
        return f"The top-1 gap is within sampling noise ({noise}): no clear cost of alignment."
    if (b - a) * map_gap <= 0:
        return (f"The top-1 gap exceeds noise ({noise}) but mAP moves the other way: the two "
                "probes disagree, so no clear verdict.")
    if b < a:
        return (f"`{kind}` is less discriminative on both probes, beyond noise ({noise}): "
                "alignment cost fine-grained information here.")
    return (f"`{kind}` is more discriminative on both probes, beyond noise ({noise}): no cost "
            "of alignment here.")
