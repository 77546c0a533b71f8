"""The report: collected records -> tables, rank statistics, robustness fits, figures, and the
files ``featkit report`` writes.

``featkit report RESULTS_DIR --out DIR`` and :func:`report` collect every result record into a
tidy table (:mod:`featkit.reporting.frames`) and derive:

- ``results.csv``: one row per (record, scalar metric), values exactly as in the JSON;
- ``report.md``: per (task, metric) a system x dataset table in percent, the clean-vs-perturbed
  table (FG-BMK Table 5), the merged-vs-single drops (FG-BMK Fig. 8), the rank statistics and the
  effective robustness fits (:mod:`featkit.stats`);
- PNG figures (:mod:`featkit.plots`): grouped bars per metric, merged vs single, clean vs
  perturbed, accuracy vs eps, probe accuracy vs depth (``layer_probe`` records), Friedman + Nemenyi critical-difference diagrams (FG-BMK Figs 6-7)
  and effective robustness plots (seed 001).

Figures that lack the inputs their statistic needs are skipped and the reason is recorded in
:attr:`Report.skipped`, never raised.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featkit import plots
from featkit.errors import FeatkitError
from featkit.reporting.collect import Entry, collect_results
from featkit.reporting.comparisons import collect_expected, expected_frame, protocol_frame
from featkit.reporting.encoders import CSV as ENCODERS_CSV
from featkit.reporting.encoders import FIGURE as ENCODERS_FIGURE
from featkit.reporting.encoders import encoder_figure, encoder_frame, encoder_section
from featkit.reporting.frames import (
    curves_for_plot,
    depth_frame,
    is_headline,
    label_records,
    merged_frame,
    metric_table,
    natural_key,
    parse_shift,
    perturbed_frame,
    rank_test_for,
    results_frame,
    select_metrics,
    sweep_xlabel,
    sweeps_frame,
)
from featkit.reporting.robustness import interval_summary, robustness_fit_for
from featkit.stats import ALPHA, RankTest, RobustnessFit, check_transform
from featkit.tasks.registry import tasks

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from featkit.tasks.intervals import Interval


@dataclass
class Report:
    """Everything ``featkit report`` derives; :meth:`write` puts it on disk.

    ``results``: tidy table (one row per record and scalar metric); ``tables``: system x dataset
    per ``"task/metric"``; ``figures``: name -> matplotlib Figure; ``skipped``: figure name ->
    why it was not drawn; ``statistics``: ``"task/metric"`` -> :class:`RankTest`;
    ``robustness``: ``"ref:shifted"`` -> :class:`RobustnessFit`."""

    results: pd.DataFrame
    sweeps: pd.DataFrame
    merged: pd.DataFrame
    perturbed: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    statistics: dict[str, RankTest] = field(default_factory=dict)
    robustness: dict[str, RobustnessFit] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: FG-BMK records next to the corrected protocol's, and expected / measured values
    protocols: pd.DataFrame | None = None
    expected: pd.DataFrame | None = None
    #: accuracy-vs-depth curves of ``layer_probe`` records (empty without them)
    depth: pd.DataFrame | None = None
    #: zero-shot and multiple-choice top-1 next to the linear probe's (seed 002 Fig. 3)
    encoders: pd.DataFrame | None = None

    def markdown(self) -> str:
        """The whole report as Markdown (what ``report.md`` holds)."""
        return render_markdown(self)

    def write(self, out: str | os.PathLike, *, dpi: int = 150) -> dict[str, Path]:
        """Write ``results.csv``, ``report.md`` (+ ``sweeps.csv``, ``merged.csv``,
        ``effective_robustness.csv`` when there is data) and every figure as ``<name>.png``;
        returns name -> path."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        written["results.csv"] = _write_csv(self.results, out / "results.csv")
        if len(self.sweeps):
            written["sweeps.csv"] = _write_csv(self.sweeps, out / "sweeps.csv")
        if len(self.merged):
            written["merged.csv"] = _write_csv(self.merged, out / "merged.csv")
        for name, table in (("protocols.csv", self.protocols), ("expected.csv", self.expected),
                            (ENCODERS_CSV, self.encoders)):
            if table is not None and len(table):
                written[name] = _write_csv(table, out / name)
        if self.depth is not None and len(self.depth):
            written["depth.csv"] = _write_csv(self.depth, out / "depth.csv")
        if self.robustness:
            import pandas as pd

            frames = [fit.points.assign(shift=key, task=fit.task, metric=fit.metric,
                                        transform=fit.transform)
                      for key, fit in self.robustness.items()]
            written["effective_robustness.csv"] = _write_csv(
                pd.concat(frames, ignore_index=True), out / "effective_robustness.csv")
        for name, figure in self.figures.items():
            path = out / f"{name}.png"
            figure.savefig(path, dpi=dpi, bbox_inches="tight")
            written[f"{name}.png"] = path
        md = out / "report.md"
        md.write_text(self.markdown())
        written["report.md"] = md
        return written


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write one table without its index; returns the path."""
    frame.to_csv(path, index=False)
    return path


def figure_name(*parts: str) -> str:
    """A file-name-safe figure name (``mAP@R`` -> ``mAP_at_R``)."""
    text = "_".join(p for p in parts if p)
    text = text.replace("@", "_at_").replace("+", "_plus_")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def report(
    results: str | os.PathLike | Iterable[str | os.PathLike | Mapping[str, Any]],
    out: str | os.PathLike | None = None,
    *,
    metrics: str | Sequence[str] = "headline",
    shifts: Sequence[str | tuple[str, str]] = (),
    baseline: Sequence[str] | str | None = None,
    transform: str = "probit",
    shift_metric: str = "top1",
    shift_task: str | None = None,
    alpha: float = ALPHA,
    perturb_eps: float | None = None,
    ci: float | None = 0.95,
    ci_resamples: int = 1000,
    ci_seed: int = 0,
    figures: bool = True,
    dpi: int = 150,
    expected: Sequence[Mapping[str, Any]] | None = None,
) -> Report:
    """Collect result records (folders, files or in-memory records) into a :class:`Report`:
    tables, rank statistics, effective robustness and figures. With ``out`` it is also written
    there (see :meth:`Report.write`).

    ``metrics``: which (task, metric) pairs get bars and rank statistics (``"headline"``: each
    task's headline metrics in the task registry, ``"all"``, or metric names). ``shifts``:
    ``"REF:SHIFTED"`` pairs for effective robustness, fitted over ``baseline`` (model ids;
    default all) with the ``transform`` (probit or logit) on ``shift_metric`` of ``shift_task``
    (default: the task with both datasets that the task registry ranks first by
    ``shift_priority``: linear_probe, else knn, else retrieval).
    ``ci``: the level of the effective-robustness intervals, a bootstrap over test items from
    the records' per-item scores (``ci_resamples`` resamples from ``ci_seed``; None: none).
    ``perturb_eps``: the budget of the clean-vs-perturbed table (default: each sweep's
    largest). ``figures=False`` computes tables and statistics only; ``dpi`` is the PNG
    resolution when writing. ``expected``: published values (``task, model, dataset, metric,
    value`` as a fraction, ``source``, optional ``features``) shown as expected / measured /
    difference, besides those in ``expected.json`` files of the result folders; FG-BMK records
    are shown next to the corrected protocol's."""
    check_transform(transform)
    if not 0.0 < alpha < 1.0:
        raise FeatkitError(f"alpha must lie in (0, 1), got {alpha}")
    if isinstance(baseline, str):
        baseline = [b.strip() for b in baseline.split(",") if b.strip()] or None
    entries, notes = collect_results(results)
    if not entries:
        where = results if isinstance(results, (str, Path)) else "the inputs"
        raise FeatkitError(
            f"no result records found in {where}; "
            "write some with --json (e.g. featkit probe linear ... --json results/x.json)"
        )
    frame = results_frame(entries)
    sweeps = sweeps_frame(entries)
    rep = Report(
        results=frame,
        sweeps=sweeps,
        merged=merged_frame(entries),
        perturbed=perturbed_frame(sweeps, perturb_eps),
        notes=list(notes),
        sources=[s for s, _ in entries],
        protocols=protocol_frame(entries),
        expected=expected_frame(entries, [*collect_expected(results), *(expected or [])]),
        depth=depth_frame(entries),
    )
    for task, metric in sorted(dict.fromkeys(zip(frame["task"], frame["metric"]))):
        rep.tables[f"{task}/{metric}"] = metric_table(frame, task, metric)
    rep.encoders, encoder_notes = encoder_frame(frame)
    rep.notes += encoder_notes
    clashes = label_records(entries)[1]
    if clashes:
        rep.notes.append(
            "several files give the same (task, system, dataset); their rows carry the file "
            f"name: {', '.join(clashes)}"
        )

    _add_rank_tests(rep, select_metrics(frame, metrics), alpha, figures)
    _add_robustness(rep, entries, shifts, figures, _interval(ci, ci_resamples, ci_seed),
                    metric=shift_metric, task=shift_task, baseline=baseline,
                    transform=transform)
    _add_merged_and_perturbed(rep, figures)
    if figures and len(rep.depth):
        rep.figures["accuracy_vs_depth"] = plots.accuracy_vs_depth(rep.depth)
    if figures and len(rep.encoders):
        rep.figures[ENCODERS_FIGURE] = encoder_figure(rep.encoders)
    if out is not None:
        rep.write(out, dpi=dpi)
    return rep


def _add_rank_tests(rep: Report, chosen: Sequence[tuple[str, str]], alpha: float,
                    figures: bool) -> None:
    """Rank test, critical-difference diagram and grouped bars of each chosen (task, metric);
    a test without enough inputs is skipped with its reason."""
    for task, metric in chosen:
        key = f"{task}/{metric}"
        test, note = rank_test_for(rep.results, task, metric, alpha)
        name = figure_name("cd", task, metric)
        if test is None:
            rep.skipped[name] = f"critical-difference diagram of {key}: {note}"
        else:
            rep.statistics[key] = test
            if note:
                rep.notes.append(f"rank test {key}: {note}")
            if figures:
                rep.figures[name] = plots.cd_diagram(test)
        if figures:
            table = rep.tables[key]
            rep.figures[figure_name("bars", task, metric)] = plots.grouped_bars(
                table.T, title=f"{task}: {metric}", ylabel=f"{metric} (%)"
            )


def _interval(level: float | None, resamples: int, seed: int) -> Interval | None:
    from featkit.tasks.intervals import Interval

    return None if level is None else Interval(level, resamples, seed)


def _add_robustness(rep: Report, entries: Sequence[Entry],
                    shifts: Sequence[str | tuple[str, str]], figures: bool,
                    interval: Interval | None, **fit_options: Any) -> None:
    """The effective-robustness fit and figure of each ``REF:SHIFTED`` pair: on its shift
    records when there are any, with intervals when their per-item scores allow
    (:func:`~featkit.reporting.robustness.robustness_fit_for`; ``fit_options``: those of
    :func:`~featkit.reporting.frames.robustness_fit`)."""
    for item in shifts:
        reference, shifted = parse_shift(item) if isinstance(item, str) else item
        key = f"{reference}:{shifted}"
        name = figure_name("effective_robustness", reference, shifted)
        fit, note = robustness_fit_for(entries, rep.results, reference, shifted,
                                       interval=interval, **fit_options)
        if fit is None:
            rep.skipped[name] = f"effective robustness {key}: {note}"
            continue
        rep.robustness[key] = fit
        if note:
            rep.notes.append(f"effective robustness {key}: {note}")
        if figures:
            rep.figures[name] = plots.effective_robustness(fit)
    if not shifts:
        rep.skipped["effective_robustness"] = (
            "effective robustness: no --shift REF:SHIFTED given (e.g. --shift imagenet:imagenet-r)"
        )


def _add_merged_and_perturbed(rep: Report, figures: bool) -> None:
    """The merged-vs-single, clean-vs-perturbed and accuracy-vs-eps figures, or why not."""
    if len(rep.merged):
        if figures:
            rep.figures["merged_vs_single"] = plots.merged_vs_single(rep.merged)
    else:
        rep.skipped["merged_vs_single"] = (
            "merged vs single: no merged probe results (featkit probe linear --dataset a,b "
            "--merge --json ...)"
        )
    if len(rep.perturbed):
        if figures:
            rep.figures["clean_vs_perturbed"] = plots.clean_vs_perturbed(rep.perturbed)
            rep.figures["accuracy_vs_eps"] = plots.accuracy_vs_eps(
                curves_for_plot(rep.sweeps), x="eps", hue="series", facet="dataset",
                xlabel=sweep_xlabel(rep.sweeps))
    else:
        reason = "no perturb results (featkit perturb ... --json ...)"
        rep.skipped["clean_vs_perturbed"] = f"clean vs perturbed: {reason}"
        rep.skipped["accuracy_vs_eps"] = f"accuracy vs eps: {reason}"


def _pct(value: Any) -> str:
    """A fraction as a percentage with two decimals; missing values as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100.0 * float(value):.2f}"


def markdown_table(table: pd.DataFrame, *, percent: bool = True, index_name: str | None = None
                   ) -> str:
    """A GitHub-flavoured Markdown table; fractions print as percentages with two decimals."""
    header = [index_name or str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(
        table.columns)) + "|"]
    for index, row in table.iterrows():
        cells = [_pct(v) if percent else _cell(v) for v in row.tolist()]
        lines.append("| " + " | ".join([str(index)] + cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A plain table cell: floats to four significant digits, missing values as a dash."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)



def _robustness_table(fit: RobustnessFit) -> pd.DataFrame:
    """The points of a fit in percent (and points), intervals as ``[low, high]`` columns."""
    import pandas as pd

    p = fit.points
    table = p.assign(
        ref=p["ref"].map(_pct),
        shifted=p["shifted"].map(_pct),
        predicted=p["predicted"].map(_pct),
        effective_robustness=p["effective_robustness"].map(lambda v: f"{v:+.2f}"),
    )
    if fit.intervals is not None:
        level = f"{100 * fit.intervals.level:g}%"

        def span(low: str, high: str, fmt: Any) -> pd.Series:
            return pd.Series([f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(p[low], p[high])],
                             index=p.index)

        table = table.drop(columns=["ref_low", "ref_high", "shifted_low", "shifted_high",
                                    "er_low", "er_high"])
        table.insert(table.columns.get_loc("ref") + 1, f"{fit.reference} {level}",
                     span("ref_low", "ref_high", _pct))
        table.insert(table.columns.get_loc("shifted") + 1, f"{fit.shifted} {level}",
                     span("shifted_low", "shifted_high", _pct))
        table.insert(table.columns.get_loc("effective_robustness") + 1, f"ER {level}",
                     span("er_low", "er_high", lambda v: f"{v:+.2f}"))
    return table.rename(columns={"ref": fit.reference, "shifted": fit.shifted,
                                 "effective_robustness": "effective robustness (points)"})

def render_markdown(rep: Report) -> str:
    """The whole report as Markdown."""
    import pandas as pd

    lines = ["# featkit report", ""]
    present = sorted(set(rep.results["task"]))
    lines.append(
        f"{len(rep.sources)} result record(s); tasks: {', '.join(present)}; "
        f"{rep.results['system'].nunique()} system(s); "
        f"{rep.results['dataset'].nunique()} dataset(s). Values in percent."
    )
    lines.append("")
    registered = tasks()

    def headline_first(key: str) -> tuple[str, bool, list]:
        task, metric = key.split("/", 1)
        return task, not is_headline(task, metric, registered), natural_key(metric)

    for key in sorted(rep.tables, key=headline_first):
        table = rep.tables[key]
        task, metric = key.split("/", 1)
        lines += [f"## {task}: {metric}", "", markdown_table(table, index_name="system"), ""]
    if len(rep.perturbed):
        lines += ["## Clean vs perturbed top-1 (FG-BMK Table 5)", ""]
        table = rep.perturbed.assign(
            clean=rep.perturbed["clean"].map(_pct),
            perturbed=rep.perturbed["perturbed"].map(_pct),
        )[["system", "dataset", "budget", "clean", "perturbed"]]
        lines += [_plain_table(table), ""]
    if len(rep.merged):
        lines += ["## Single vs merged classifier (FG-BMK Fig. 8)", ""]
        table = rep.merged.assign(**{c: rep.merged[c].map(_pct) for c in ("single", "merged")},
                                  drop=rep.merged["drop"].map(lambda v: f"{100 * v:+.2f}"))
        lines += [_plain_table(table[["task", "system", "run", "dataset", "single", "merged",
                                      "drop"]]), ""]
        means = rep.merged.groupby(["task", "system", "run"], sort=False)["drop"].mean()
        for (task, system, run), drop in means.items():
            lines.append(f"- {task}, {system}, {run}: mean drop {100 * drop:+.2f} points")
        lines.append("")
    if rep.depth is not None and len(rep.depth):
        lines += ["## Probe accuracy by layer", ""]
        for panel, part in rep.depth.groupby("panel", sort=False):
            table = part.pivot_table(index="system", columns="layer", values="top1", sort=False)
            table = table.reindex(columns=sorted(table.columns))
            lines += [f"{panel}, top-1 by layer:", "", markdown_table(table, index_name="system"), ""]
    if rep.encoders is not None:
        lines += encoder_section(rep.encoders)
    lines += _comparison_sections(rep)
    for key, test in rep.statistics.items():
        lines += [f"## Rank test: {key}", "", test.summary().replace("chi2", "χ²") + ".", ""]
        ranks = pd.DataFrame({"mean rank": test.mean_ranks.sort_values()})
        lines += [markdown_table(ranks, percent=False, index_name="system"), ""]
        if test.groups:
            joined = "; ".join("{" + ", ".join(g) + "}" for g in test.groups)
            lines.append(f"Not significantly different (Nemenyi p ≥ {test.alpha:g}): {joined}.")
        else:
            lines.append(f"Every pair differs significantly (Nemenyi p < {test.alpha:g}).")
        if test.dropped_datasets:
            lines.append(f"Datasets dropped for gaps: {', '.join(test.dropped_datasets)}.")
        lines.append("")
    for key, fit in rep.robustness.items():
        lines += [f"## Effective robustness: {key}", "", fit.summary() + ".", ""]
        if fit.intervals is not None:
            lines += [interval_summary(fit) + ".", ""]
        lines += [_plain_table(_robustness_table(fit)), ""]
    lines += ["## Figures", ""]
    for name in rep.figures:
        lines.append(f"- `{name}.png`")
    for name, reason in rep.skipped.items():
        lines.append(f"- skipped `{name}`: {reason}")
    if rep.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rep.notes]
    return "\n".join(lines) + "\n"


def _points(value: Any) -> str:
    """A difference of fractions in percentage points, signed; missing as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100.0 * float(value):+.2f}"


def _comparison_sections(rep: Report) -> list[str]:
    """FG-BMK's protocol next to the corrected one, and expected / measured / difference."""
    lines: list[str] = []
    if rep.protocols is not None and len(rep.protocols):
        lines += ["## FG-BMK protocol next to the corrected one", "",
                  "FG-BMK's numbers as its released code computes them (heads selected on "
                  "test, its class-rank 'mAP'; each record lists its departures) next to the "
                  "corrected protocol's. Difference: FG-BMK - corrected, in points.", ""]
        table = rep.protocols.assign(
            FGBMK=rep.protocols["fgbmk"].map(_pct),
            corrected=rep.protocols["corrected"].map(_pct),
            difference=rep.protocols["difference"].map(_points),
        ).rename(columns={"FGBMK": "FG-BMK"})
        lines += [_plain_table(table[["model", "dataset", "metric", "features", "FG-BMK",
                                      "corrected_task", "corrected_metric", "corrected_features",
                                      "corrected", "difference"]]), ""]
    if rep.expected is not None and len(rep.expected):
        lines += ["## Expected / measured / difference", "",
                  "Published values next to this run's (percent); difference: measured - "
                  "expected, in points; '–' where nothing measured the cell yet.", ""]
        table = rep.expected.assign(
            expected=rep.expected["expected"].map(_pct),
            measured=rep.expected["measured"].map(_pct),
            difference=rep.expected["difference"].map(_points),
        )
        lines += [_plain_table(table), ""]
    return lines


def _plain_table(frame: pd.DataFrame) -> str:
    """A Markdown table of a frame's rows as they are (no percent conversion)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(
        index=False)]
    return "\n".join([header, rule, *body])
