"""Zero-shot and multiple-choice accuracy next to linear-probe accuracy, per model and dataset:
the encoder-vs-VLM comparison of seed 002 (Fig. 3: VLMs' multiple-choice answers against their
own CLIP encoders' zero-shot accuracy), with each model's linear probe beside them.

The table has a row for every (model, dataset) with a zero-shot or multiple-choice record; the
linear probe's top-1 is the best over the feature kinds probed (the kind is named). Where several
records fill one cell (two template sets, say), the first one read is used and a note says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: record task -> column title
COLUMNS = {"zeroshot": "zero-shot", "mc": "multiple choice", "linear_probe": "linear probe"}
FIGURE = "zeroshot_mc_vs_linear"
CSV = "zeroshot_mc_vs_linear.csv"


def encoder_frame(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``(table, notes)``: one row per (model, dataset) with zero-shot and/or multiple-choice
    top-1 (fractions), the linear probe's best top-1 and its feature kind; empty without
    zero-shot or multiple-choice records. ``results``: the report's tidy table."""
    import pandas as pd

    columns = ["model", "dataset", *COLUMNS.values(), "linear probe features"]
    part = results[results["task"].isin(list(COLUMNS)) & (results["metric"] == "top1")
                   & ~results["merged"]]
    if not part["task"].isin(["zeroshot", "mc"]).any():
        return pd.DataFrame(columns=columns), []
    notes = []
    counts = part.groupby(["task", "model", "dataset", "features"], sort=False).size()
    repeated = counts[counts > 1]
    if len(repeated):
        cells = ", ".join(f"{t} {m} on {d}" for t, m, d, _ in repeated.index[:3])
        notes.append(f"zero-shot / multiple choice vs linear probe: several records for {cells}; "
                     f"the first one read is shown")
    first = part.drop_duplicates(["task", "model", "dataset", "features"])
    rows = []
    for (model, dataset), group in first.groupby(["model", "dataset"], sort=False):
        by_task = {task: g for task, g in group.groupby("task", sort=False)}
        if "zeroshot" not in by_task and "mc" not in by_task:
            continue
        row = {"model": model, "dataset": dataset}
        for task, title in COLUMNS.items():
            g = by_task.get(task)
            best = None if g is None else g.loc[g["value"].idxmax()]
            row[title] = float("nan") if best is None else float(best["value"])
            if task == "linear_probe":
                row["linear probe features"] = "" if best is None else str(best["features"])
        rows.append(row)
    return pd.DataFrame(rows, columns=columns), notes


def encoder_section(table: pd.DataFrame) -> list[str]:
    """The report's Markdown section for the table (percent)."""
    if not len(table):
        return []

    def pct(value: float) -> str:
        return "–" if value != value else f"{100 * value:.2f}"

    header = list(table.columns)
    lines = ["## Zero-shot and multiple choice next to the linear probe (seed 002 Fig. 3)", "",
             "Top-1 in percent: zero-shot (image vs class prompts), multiple choice (the chosen "
             "option is the answer) and the linear probe (its best feature kind).", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.itertuples(index=False):
        cells = [str(row[0]), str(row[1]), *(pct(v) for v in row[2:5]), str(row[5])]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def encoder_figure(table: pd.DataFrame) -> Figure:
    """Grouped bars: one group per (model, dataset), one bar per method."""
    from featkit import plots

    bars = table.set_index(table["model"] + " / " + table["dataset"])[list(COLUMNS.values())]
    return plots.grouped_bars(bars, title="zero-shot / multiple choice vs linear probe",
                              ylabel="top-1 (%)")
