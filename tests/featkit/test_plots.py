"""featkit.plots: every figure function returns a Figure that draws the numbers it was given
and saves as a non-empty PNG; the critical-difference bars join exactly the pairs Nemenyi's test
does not separate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from featkit import plots
from featkit import reporting as R
from featkit import stats as S
from tests.featkit.test_stats import RANKS, SYSTEMS, ranked_values


def saved(fig: Figure, tmp_path, name: str) -> bytes:
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40, bbox_inches="tight")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return data


def bar_heights(ax) -> list[float]:
    return [round(p.get_height(), 9) for p in ax.patches]


def test_grouped_bars_draw_the_table_in_percent(tmp_path):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    table = pd.DataFrame({"m1": [0.5, 0.25], "m2": [0.75, np.nan]}, index=["cub", "cars"])
    fig = plots.grouped_bars(table, title="t", ylabel="top-1 (%)")
    ax = fig.axes[0]
    # one series (column) after another; NaN drawn as an empty bar
    assert bar_heights(ax) == [50.0, 25.0, 75.0, 0.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cub", "cars"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m1", "m2"]
    assert plt.get_fignums() == open_before  # no pyplot state: nothing to close or leak
    saved(fig, tmp_path, "bars")


def test_merged_vs_single_and_clean_vs_perturbed(tmp_path):
    merged = pd.DataFrame({"task": "linear_probe", "system": "m", "run": "cub,cars",
                           "dataset": ["cub", "cars"], "single": [0.8, 0.9],
                           "merged": [0.75, 0.86], "drop": [0.05, 0.04]})
    fig = plots.merged_vs_single(merged)
    assert bar_heights(fig.axes[0]) == [80.0, 90.0, 75.0, 86.0]
    assert "mean drop 4.50" in fig.axes[0].get_title()
    saved(fig, tmp_path, "merged")

    perturbed = pd.DataFrame({"system": ["a", "b"], "dataset": ["cub", "cub"],
                              "clean": [0.8895, 0.9164], "perturbed": [0.2494, 0.2594],
                              "budget": "L2 ε = 0.1·‖x‖"})
    fig = plots.clean_vs_perturbed(perturbed)
    assert bar_heights(fig.axes[0]) == pytest.approx([88.95, 91.64, 24.94, 25.94])
    assert "L2 ε = 0.1" in fig.axes[0].get_title()
    saved(fig, tmp_path, "perturbed")


def test_accuracy_vs_eps_lines_and_scale(tmp_path):
    curves = pd.DataFrame({"kind": ["v"] * 3 + ["a"] * 3, "dataset": "d",
                           "eps_rel": [0, 0.001, 0.1] * 2,
                           "top1": [0.9, 0.5, 0.0, 0.8, 0.6, 0.1]})
    fig = plots.accuracy_vs_eps(curves, x="eps_rel", hue="kind", facet="dataset")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["v"].get_ydata()) == pytest.approx([90, 50, 0])
    assert list(lines["a"].get_xdata()) == [0, 0.001, 0.1]
    assert ax.get_xscale() == "symlog"  # budgets span 100x
    narrow = plots.accuracy_vs_eps(curves.assign(eps_rel=[0, 0.05, 0.1] * 2), x="eps_rel",
                                   hue="kind")
    assert narrow.axes[0].get_xscale() == "linear"
    saved(fig, tmp_path, "eps")


def test_pca_scatter_and_per_class_ranked(tmp_path):
    rng = np.random.default_rng(0)
    points = pd.DataFrame({"kind": ["v"] * 20 + ["a"] * 20, "x": rng.normal(size=40),
                           "y": rng.normal(size=40), "class": list("ab") * 20,
                           "explained": 0.5})
    fig = plots.pca_scatter(points, facet="kind", title="d")
    assert len(fig.axes) == 2
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 20
    assert "50% var." in fig.axes[0].get_title()
    saved(fig, tmp_path, "pca")

    per_class = pd.DataFrame({"kind": ["v"] * 4 + ["a"] * 4, "class": list("wxyz") * 2,
                              "accuracy": [0.2, 0.9, 0.5, 0.7, 0.1, 0.3, 0.2, 0.4]})
    fig = plots.per_class_ranked(per_class, hue="kind", worst=1)
    ax = fig.axes[0]
    ys = {line.get_label().split(" ")[0]: list(line.get_ydata()) for line in ax.get_lines()}
    assert ys["v"] == pytest.approx([90, 70, 50, 20])  # best -> worst
    assert ys["a"] == pytest.approx([40, 30, 20, 10])
    assert {t.get_text() for t in ax.texts} == {"w"}  # worst class of v is w, of a is w
    saved(fig, tmp_path, "per_class")


def test_cd_diagram_figure(tmp_path):
    values = pd.DataFrame(np.array([[0.9, 0.8, 0.7, 0.6]] * 6) + np.arange(6)[:, None] / 100,
                          columns=list("ABCD"))
    test = S.friedman_nemenyi(values)
    fig = plots.cd_diagram(test)
    title = fig.axes[0].get_title()
    assert f"CD = {test.cd:.3f}" in title and "Friedman p = " in title
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert "A (1.00)" in labels and "(4.00) D" in labels
    saved(fig, tmp_path, "cd")


def test_cd_diagram_cliques_agree_with_nemenyi_pvalues():
    checked, shapes = 0, set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        values = pd.DataFrame(rng.random((12, 5)) + np.linspace(0, 0.6, 5),
                              columns=SYSTEMS)
        test = S.friedman_nemenyi(values, alpha=(0.05, 0.2)[seed % 2])
        by_rank = {round(r, 9): s for s, r in test.mean_ranks.items()}
        if len(by_rank) < 5:
            continue  # tied mean ranks: a bar's x positions would not name its systems
        if checked == 8:
            break
        checked += 1
        shapes.add((test.alpha, len(test.groups)))
        fig, axes = plots.new_figure()
        artists = plots.draw_cd_diagram(axes[0, 0], test)
        bars = [tuple(sorted(by_rank[round(x, 9)] for x in line.get_xdata()))
                for lines in artists["crossbars"] for line in lines]
        assert sorted(bars) == sorted(test.groups)
        for bar in bars:  # every pair under a bar: not significant
            for a in bar:
                for b in bar:
                    assert test.pvalues.loc[a, b] >= test.alpha
        for a in SYSTEMS:  # every non-significant pair shares a bar
            for b in SYSTEMS:
                if a < b and test.pvalues.loc[a, b] >= test.alpha:
                    assert any(a in bar and b in bar for bar in bars)
    assert checked == 8 and len(shapes) >= 3  # both alphas, not all of one structure


def test_designed_diagram_draws_the_four_expected_bars():
    test = S.friedman_nemenyi(ranked_values())
    fig, axes = plots.new_figure()
    artists = plots.draw_cd_diagram(axes[0, 0], test)
    spans = sorted(tuple(sorted(np.round(line.get_xdata(), 3))) for lines in artists["crossbars"]
                   for line in lines)
    means = np.round(RANKS.mean(axis=0), 3)
    assert spans == [tuple(means[i:i + 2]) for i in range(4)]


def test_effective_robustness_figure_draws_the_fit(tmp_path):
    ref = np.array([0.3, 0.5, 0.7])
    shifted = S.inverse_transform(0.8 * S.transform_accuracy(ref) - 0.3)
    frame = pd.DataFrame([
        {"task": "linear_probe", "model": f"m{i}", "system": f"m{i}", "dataset": d,
         "merged": False, "metric": "top1", "value": float(v)}
        for i, (a, b) in enumerate(zip(ref, shifted)) for d, v in (("in", a), ("out", b))
    ])
    fit, _ = R.robustness_fit(frame, "in", "out")
    fig = plots.effective_robustness(fit)
    ax = fig.axes[0]
    line = next(li for li in ax.get_lines() if li.get_label().startswith("baseline fit"))
    x, y = line.get_xdata(), line.get_ydata()
    assert np.allclose(y, 0.8 * x - 0.3)
    tick_labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "50" in tick_labels  # axes labelled in accuracy, drawn on the probit scale
    assert np.isclose(ax.get_xticks()[tick_labels.index("50")], 0.0)
    saved(fig, tmp_path, "er")
