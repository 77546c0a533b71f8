"""Accuracy-vs-eps figure of a PGD sweep (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from probes.perturb import PerturbSweep


def _axis_label(space: str, norm: str, eps_mode: str) -> str:
    name = "L∞" if norm == "linf" else "L2"
    if space == "image":
        return f"ε ({name}, pixels in [0, 1])"
    if eps_mode == "relative":
        return f"ε / mean ‖x‖{'∞' if norm == 'linf' else '₂'}  ({name}, features)"
    return f"ε ({name}, raw feature units)"


def plot_sweep(
    sweep: PerturbSweep | Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Top-1 (and attack success rate) against the budget, the clean accuracy as a dashed line.

    ``sweep``: a :class:`PerturbSweep` or a result record written by ``featkit perturb`` (its
    ``metrics.sweep`` rows and ``settings``), so saved JSON files can be re-plotted. The x axis
    is in the units the budgets were given in (relative or absolute)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(sweep, PerturbSweep):
        rows: Sequence[Mapping[str, Any]] = [p.row() for p in sweep.points]
        clean, space, norm, mode = sweep.clean_top1, sweep.space, sweep.norm, sweep.eps_mode
        target = sweep.target
    else:
        rows = sweep["metrics"]["sweep"]
        clean = sweep["metrics"]["clean_top1"]
        settings = sweep["settings"]
        space, norm, mode = settings["space"], settings["norm"], settings["eps_mode"]
        target = settings.get("target", "none")
    key = "eps_rel" if mode == "relative" else "eps"
    xs = [float(r[key]) for r in rows]
    top1 = [float("nan") if r["top1"] is None else 100 * r["top1"] for r in rows]
    success = [float("nan") if r["success_rate"] is None else 100 * r["success_rate"] for r in rows]

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.axhline(100 * clean, color="0.4", linestyle="--", linewidth=1,
               label=f"clean top-1 {100 * clean:.2f}")
    ax.plot(xs, top1, marker="o", color="tab:blue", label="top-1 under attack")
    label = "attack success" + ("" if target == "none" else f" ({target} target)")
    ax.plot(xs, success, marker="s", color="tab:red", linestyle=":", alpha=0.8, label=label)
    for x, y in zip(xs, top1):
        ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center",
                    fontsize=7, color="tab:blue")
    positive = [x for x in xs if x > 0]
    if positive and max(positive) / min(positive) > 20:  # budgets spanning decades
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel(_axis_label(space, norm, mode))
    ax.set_ylabel("%")
    ax.set_ylim(-2, 108)  # room for the labels above 100 %
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
