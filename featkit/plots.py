"""Figures for notebooks and papers: each function takes tidy tables and returns a matplotlib
:class:`~matplotlib.figure.Figure`.

Figures are built with the object-oriented API (``Figure(...)``, no pyplot state), so they work
headless, never pile up in pyplot's figure list, and display in Jupyter as the cell's value.
Save one with ``fig.savefig("x.png", bbox_inches="tight")``. Accuracies come in as fractions and
are drawn in percent. The statistics a figure draws (rank tests, robustness fits) come from
:mod:`featkit.stats`; the tables from :mod:`featkit.reporting.frames`, which this module never
imports (the report imports the figures, not the other way round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.stats import RankTest, RobustnessFit, inverse_transform, transform_accuracy

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(width: float = 6.4, height: float = 4.0, nrows: int = 1, ncols: int = 1,
               **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure with constrained layout and its axes as a 2-D array."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _bar_labels(ax: Axes, bars: Any, values: Sequence[float], rotate: bool) -> None:
    for bar, value in zip(bars, values):
        if not math.isfinite(value):
            continue
        ax.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                    fontsize=7, rotation=90 if rotate else 0)


def grouped_bars(
    table: pd.DataFrame,
    *,
    title: str | None = None,
    ylabel: str | None = None,
    percent: bool = True,
    annotate: bool = True,
) -> Figure:
    """Bars grouped by the table's index (x axis), one coloured series per column (legend).

    E.g. ``report.tables["retrieval/mAP"].T`` (datasets on x, one bar per system)."""
    groups = [str(i) for i in table.index]
    series = [str(c) for c in table.columns]
    values = table.to_numpy(dtype=float) * (100.0 if percent else 1.0)
    n_groups, n_series = max(len(groups), 1), max(len(series), 1)
    width = min(16.0, max(5.0, 1.2 + n_groups * (0.4 + 0.28 * n_series)))
    fig, axes = new_figure(width, 4.2)
    ax = axes[0, 0]
    bar_width = 0.8 / n_series
    centers = np.arange(len(groups))
    rotate = n_series * n_groups > 12
    for j, (name, color) in enumerate(zip(series, _colors(len(series)))):
        offsets = centers - 0.4 + bar_width * (j + 0.5)
        heights = np.nan_to_num(values[:, j], nan=0.0)
        bars = ax.bar(offsets, heights, bar_width, label=name, color=color)
        if annotate:
            _bar_labels(ax, bars, values[:, j], rotate)
    ax.set_xticks(centers, groups, rotation=20 if max(map(len, groups), default=0) > 10 else 0)
    ax.set_ylabel(ylabel or ("%" if percent else ""))
    if percent:
        ax.set_ylim(0, 105 if np.nanmax(values, initial=0) <= 100 else None)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def merged_vs_single(merged: pd.DataFrame) -> Figure:
    """Single-dataset vs merged-classifier top-1 per dataset (FG-BMK Fig. 8), one panel per
    (task, system, run); each pair is annotated with its drop in points.

    ``merged``: columns task, system, run, dataset, single, merged (fractions), as
    :func:`featkit.reporting.merged_frame` builds."""
    panels = list(merged.groupby(["task", "system", "run"], sort=False))
    n = len(panels)
    widest = max((len(p) for _, p in panels), default=1)
    fig, axes = new_figure(min(16.0, max(4.5, 1.0 + 1.1 * widest) * min(n, 3)),
                           3.8 * math.ceil(n / 3), math.ceil(n / 3), min(n, 3))
    for ax, ((task, system, _run), part) in zip(axes.flat, panels):
        x = np.arange(len(part))
        single = 100.0 * part["single"].to_numpy(dtype=float)
        joint = 100.0 * part["merged"].to_numpy(dtype=float)
        ax.bar(x - 0.2, single, 0.4, label="single-dataset probe", color="tab:blue")
        ax.bar(x + 0.2, joint, 0.4, label="merged probe", color="tab:orange")
        for xi, s, m in zip(x, single, joint):
            ax.annotate(f"{s - m:+.1f}" if math.isfinite(s - m) else "",
                        (xi, max(s, m) if math.isfinite(max(s, m)) else 0),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        ax.set_xticks(x, part["dataset"].tolist())
        ax.set_ylim(0, 110)
        ax.set_ylabel("top-1 (%)")
        mean_drop = np.nanmean(single - joint) if len(part) else math.nan
        ax.set_title(f"{system}\n{task}, mean drop {mean_drop:.2f} pts", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="lower left")
    return fig


def clean_vs_perturbed(perturbed: pd.DataFrame) -> Figure:
    """Original vs PGD-perturbed top-1 per (system, dataset) (FG-BMK Table 5 as a plot).

    ``perturbed``: columns system, dataset, clean, perturbed (fractions), budget (text), as
    :func:`featkit.reporting.perturbed_frame` builds."""
    labels = [f"{s}\n{d}" for s, d in zip(perturbed["system"], perturbed["dataset"])]
    clean = 100.0 * perturbed["clean"].to_numpy(dtype=float)
    attacked = 100.0 * perturbed["perturbed"].to_numpy(dtype=float)
    fig, axes = new_figure(min(16.0, max(5.0, 1.2 + 1.3 * len(labels))), 4.2)
    ax = axes[0, 0]
    x = np.arange(len(labels))
    bars = ax.bar(x - 0.2, clean, 0.4, label="original", color="tab:blue")
    _bar_labels(ax, bars, clean, False)
    bars = ax.bar(x + 0.2, np.nan_to_num(attacked), 0.4, label="perturbed", color="tab:red")
    _bar_labels(ax, bars, attacked, False)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlim(-0.5 - 0.5 / max(len(x), 1), len(x) - 0.5 + 0.5 / max(len(x), 1))
    ax.set_ylim(0, 110)
    ax.set_ylabel("linear-probe top-1 (%)")
    budgets = sorted(set(perturbed["budget"]))
    ax.set_title("original vs perturbed features (" + "; ".join(budgets) + ")", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_vs_eps(
    curves: pd.DataFrame,
    *,
    x: str = "eps",
    y: str = "top1",
    hue: str = "series",
    facet: str | None = None,
    xlabel: str | None = None,
    title: str | None = None,
    xscale: str = "auto",
) -> Figure:
    """Accuracy (``y``, fractions) against the attack budget ``x``, one line per ``hue`` value,
    one panel per ``facet`` value. ``xscale``: ``"linear"``, ``"symlog"`` (log with a linear
    part around 0, so eps = 0 stays on the axis) or ``"auto"`` (symlog when the positive
    budgets span more than a factor of 20)."""
    positive = curves.loc[curves[x] > 0, x].astype(float)
    if xscale == "auto":
        spread = positive.max() / positive.min() if len(positive) else 1.0
        xscale = "symlog" if spread > 20 else "linear"
    panels = list(curves.groupby(facet, sort=False)) if facet else [(title or "", curves)]
    n = len(panels)
    fig, axes = new_figure(min(16.0, 4.6 * n), 3.8, 1, n)
    hues = list(dict.fromkeys(curves[hue]))
    colors = dict(zip(hues, _colors(len(hues))))
    for ax, (name, part) in zip(axes.flat, panels):
        for key, line in part.groupby(hue, sort=False):
            line = line.sort_values(x)
            ax.plot(line[x], 100.0 * line[y].astype(float), marker="o", markersize=3,
                    label=str(key), color=colors[key])
        if xscale == "symlog":
            ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel("top-1 under attack (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(str(name) if facet else (title or ""), fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def pca_scatter(
    points: pd.DataFrame,
    *,
    facet: str = "kind",
    label: str = "class",
    title: str | None = None,
) -> Figure:
    """2-D scatter of projected points (columns x, y, ``label``), one panel per ``facet`` value,
    coloured by ``label``; panel titles carry the explained variance when the column
    ``explained`` is present."""
    panels = list(points.groupby(facet, sort=False))
    n = len(panels)
    fig, axes = new_figure(min(16.0, 3.9 * n + 1.2), 3.8, 1, n)
    classes = list(dict.fromkeys(points[label]))
    colors = dict(zip(classes, _colors(len(classes))))
    for ax, (name, part) in zip(axes.flat, panels):
        for cls, group in part.groupby(label, sort=False):
            ax.scatter(group["x"], group["y"], s=10, alpha=0.75, color=colors[cls],
                       label=str(cls))
        heading = str(name)
        if "explained" in part:
            heading += f"  (PC1+PC2: {100 * part['explained'].iloc[0]:.0f}% var.)"
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[-1].legend(title=label, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                         frameon=False, markerscale=1.5)
    if title:
        fig.suptitle(title)
    return fig


def per_class_ranked(
    per_class: pd.DataFrame,
    *,
    hue: str = "kind",
    value: str = "accuracy",
    label: str = "class",
    facet: str | None = None,
    worst: int = 3,
) -> Figure:
    """Per-class accuracy sorted from best to worst, one line per ``hue`` (the "knowledge
    bias" plot of FG-BMK Fig. 3): a flat line means every class is learnt alike, a steep tail
    means some classes are much harder in that space. The ``worst`` classes are named."""
    panels = list(per_class.groupby(facet, sort=False)) if facet else [("", per_class)]
    n = len(panels)
    fig, axes = new_figure(min(16.0, 5.0 * n), 3.8, 1, n)
    hues = list(dict.fromkeys(per_class[hue]))
    colors = dict(zip(hues, _colors(len(hues))))
    for ax, (name, part) in zip(axes.flat, panels):
        for key, group in part.groupby(hue, sort=False):
            ordered = group.sort_values(value, ascending=False, kind="stable")
            ranks = np.arange(1, len(ordered) + 1)
            acc = 100.0 * ordered[value].to_numpy(dtype=float)
            ax.plot(ranks, acc, marker="o", markersize=3, color=colors[key],
                    label=f"{key} (mean {np.nanmean(acc):.1f})")
            for r, a, cls in list(zip(ranks, acc, ordered[label]))[-worst:]:
                ax.annotate(str(cls), (r, a), textcoords="offset points", xytext=(3, -8),
                            fontsize=7, color=colors[key])
        ax.set_xlabel("class rank (best → worst)")
        ax.set_ylabel("per-class accuracy (%)")
        ax.set_ylim(-5, 105)
        ax.set_title(str(name), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def draw_cd_diagram(ax: Axes, test: RankTest) -> dict[str, list]:
    """Draw a Nemenyi critical-difference diagram on ``ax`` with scikit-posthocs (mean ranks,
    1 = best, on the axis; systems joined by a bar where Nemenyi p >= alpha; the CD as a
    segment above the axis). Returns scikit-posthocs' artists (keys markers, elbows, labels,
    crossbars)."""
    import inspect

    import scikit_posthocs

    draw = scikit_posthocs.critical_difference_diagram
    # A 0/1 matrix (0 = significant at test.alpha) makes the bars independent of the alpha
    # scikit-posthocs applies (only newer releases take alpha= and cd=).
    significance = (test.pvalues >= test.alpha).astype(float)
    options: dict[str, Any] = {}
    if "cd" in inspect.signature(draw).parameters:
        options["cd"] = test.cd
    artists = draw(test.mean_ranks, significance, ax=ax, label_fmt_left="{label} ({rank:.2f})",
                   label_fmt_right="({rank:.2f}) {label}", **options)
    if "cd" not in options:
        start = float(test.mean_ranks.min())
        ax.plot([start, start + test.cd], [0.5, 0.5], color="k", linewidth=2)
        ax.text(start + test.cd / 2, 0.65, f"CD = {test.cd:.2g}", ha="center")
    ax.set_xlim(0.9, test.k + 0.1)
    return artists


def cd_diagram(test: RankTest, *, title: str | None = None) -> Figure:
    """The critical-difference diagram of a :class:`featkit.stats.RankTest` with the
    Friedman p-value and the CD in the title (FG-BMK Figs 6-7)."""
    fig, axes = new_figure(7.0, 1.4 + 0.32 * test.k + 0.25 * max(len(test.groups), 1))
    ax = axes[0, 0]
    draw_cd_diagram(ax, test)
    heading = title or f"{test.task} {test.metric}".strip()
    ax.set_title(
        f"{heading}: Friedman p = {test.pvalue:.3g}, CD = {test.cd:.3f} "
        f"(α = {test.alpha:g}, k = {test.k}, N = {test.n})",
        fontsize=9, pad=22,
    )
    return fig


def _accuracy_ticks(lo: float, hi: float) -> list[float]:
    candidates = [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95,
                  0.98, 0.99, 0.999]
    inside = [c for c in candidates if lo <= c <= hi]
    if len(inside) >= 2:
        return inside
    return [c for c in candidates if lo / 3 <= c <= 1 - (1 - hi) / 3]


def effective_robustness(fit: RobustnessFit, *, annotate: bool = True) -> Figure:
    """Shifted vs reference accuracy on probit (or logit) axes: the baseline fit as a line,
    y = x dashed, baseline systems as dots and the others as stars, each labelled with its
    effective robustness in points. With ``fit.intervals`` (a bootstrap over test items) the
    line gets its confidence band, the points error bars on both accuracies and the labels
    the effective robustness's interval."""
    points = fit.points
    iv = fit.intervals
    tx = transform_accuracy(points["ref"], fit.transform, fit.clip)
    ty = transform_accuracy(points["shifted"], fit.transform, fit.clip)
    if iv is not None:
        bx = transform_accuracy(iv.ref, fit.transform, fit.clip)
        by = transform_accuracy(iv.shifted, fit.transform, fit.clip)
        lo, hi = float(min(bx.min(), by.min())), float(max(bx.max(), by.max()))
    else:
        lo = float(min(tx.min(), ty.min()))
        hi = float(max(tx.max(), ty.max()))
    pad = 0.15 * (hi - lo) + 0.1
    lo, hi = lo - pad, hi + pad
    fig, axes = new_figure(6.2, 5.0)
    ax = axes[0, 0]
    grid = np.linspace(lo, hi, 50)
    ax.plot(grid, grid, linestyle="--", color="0.6", linewidth=1, label="y = x")
    ax.plot(grid, fit.slope * grid + fit.intercept, color="tab:blue", linewidth=1.5,
            label=f"baseline fit ({fit.transform}): slope {fit.slope:.2f}, intercept "
            f"{fit.intercept:+.2f}")
    if iv is not None:
        band_low, band_high = iv.band(grid)
        ax.fill_between(grid, band_low, band_high, color="tab:blue", alpha=0.15, linewidth=0,
                        label=f"{100 * iv.level:g}% confidence band")
        ax.errorbar(tx, ty, xerr=np.abs(np.stack([tx - bx[:, 0], bx[:, 1] - tx])),
                    yerr=np.abs(np.stack([ty - by[:, 0], by[:, 1] - ty])), fmt="none",
                    ecolor="0.35", elinewidth=0.8, capsize=2, zorder=2)
    base = points["baseline"].to_numpy(dtype=bool)
    ax.scatter(tx[base], ty[base], color="tab:blue", s=30, zorder=3, label="baseline")
    if (~base).any():
        ax.scatter(tx[~base], ty[~base], color="tab:red", marker="*", s=90, zorder=3,
                   label="other")
    if annotate:
        ers = points["effective_robustness"].to_numpy(dtype=float)
        for i, (x, y, name) in enumerate(zip(tx, ty, points["system"])):
            text = f"{name} ({ers[i]:+.1f}"
            if iv is not None:
                low, high = iv.effective_robustness[i]
                text += f" [{low:+.1f}, {high:+.1f}]"
            ax.annotate(text + ")", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ticks = _accuracy_ticks(float(inverse_transform(lo, fit.transform)),
                            float(inverse_transform(hi, fit.transform)))
    positions = transform_accuracy(ticks, fit.transform, fit.clip)
    labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(positions, labels)
    ax.set_yticks(positions, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"{fit.reference} {fit.metric} (%, {fit.transform} scale)")
    ax.set_ylabel(f"{fit.shifted} {fit.metric} (%, {fit.transform} scale)")
    title = f"effective robustness {fit.reference} → {fit.shifted} ({fit.task})"
    if iv is not None:
        title += f"\nintervals: bootstrap over test items, {iv.resamples} resamples"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def accuracy_by_level(
    levels: pd.DataFrame,
    *,
    y: str = "top1",
    hue: str = "system",
    facet: str | None = "dataset",
    title: str | None = None,
) -> Figure:
    """Accuracy (``y``, fractions) against taxonomy level, one line per ``hue`` value (a model),
    one panel per ``facet`` value (FG-BMK Fig. 2). ``levels`` has a ``level`` column; levels
    are drawn in the order they first appear (fine to coarse in taxonomy records) and a line
    skips the levels it lacks."""
    order = list(dict.fromkeys(levels["level"]))
    position = {name: i for i, name in enumerate(order)}
    panels = list(levels.groupby(facet, sort=False)) if facet else [(title or "", levels)]
    fig, axes = new_figure(min(16.0, 4.6 * len(panels)), 3.8, 1, len(panels))
    hues = list(dict.fromkeys(levels[hue]))
    colors = dict(zip(hues, _colors(len(hues))))
    for ax, (name, part) in zip(axes.flat, panels):
        for key, line in part.groupby(hue, sort=False):
            xs = [position[v] for v in line["level"]]
            ordered = sorted(zip(xs, 100.0 * line[y].astype(float)))
            ax.plot([x for x, _ in ordered], [v for _, v in ordered], marker="o", markersize=4,
                    label=str(key), color=colors[key])
        ax.set_xticks(range(len(order)), order)
        ax.set_xlabel("taxonomy level (fine to coarse)")
        ax.set_ylabel("linear-probe top-1 (%)")
        ax.set_ylim(0, 102)
        ax.set_title(str(name) if facet else (title or ""), fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[-1].legend(fontsize=8, loc="lower right")
    return fig


def accuracy_vs_depth(
    curves: pd.DataFrame,
    *,
    y: str = "top1",
    hue: str = "system",
    facet: str | None = "panel",
    title: str | None = None,
) -> Figure:
    """Probe accuracy (``y``, fractions) against depth, one line per ``hue`` value (a model),
    one panel per ``facet`` value (e.g. dataset and kind): "where is fine-grained information
    lost?". ``curves`` has ``layer`` and ``relative_depth`` columns; a panel whose models all
    have the same depth is drawn against the layer number, else against the relative depth
    (layer / depth, so towers of different depths share the axis)."""
    panels = list(curves.groupby(facet, sort=False)) if facet else [(title or "", curves)]
    fig, axes = new_figure(min(16.0, 4.6 * len(panels)), 3.8, 1, len(panels))
    hues = list(dict.fromkeys(curves[hue]))
    colors = dict(zip(hues, _colors(len(hues))))
    for ax, (name, part) in zip(axes.flat, panels):
        by_layer = part["depth"].nunique() == 1
        x = "layer" if by_layer else "relative_depth"
        for key, line in part.groupby(hue, sort=False):
            line = line.sort_values(x)
            ax.plot(line[x], 100.0 * line[y].astype(float), marker="o", markersize=3,
                    label=str(key), color=colors[key])
        ax.set_xlabel("layer" if by_layer else "relative depth (layer / depth)")
        ax.set_ylabel(f"{y} (%)")
        ax.set_title(str(name) if facet else (title or ""), fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig
