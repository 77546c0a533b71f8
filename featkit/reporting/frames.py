"""Tidy pandas tables derived from result records, and the statistics read off them.

:func:`results_frame` is the long table (one row per record and scalar metric) every other
table starts from; :func:`sweeps_frame`, :func:`merged_frame` and :func:`perturbed_frame` hold
the PGD sweeps and the merged-probe comparisons. :func:`rank_test_for` and
:func:`robustness_fit` pick their inputs from the long table and call :mod:`featkit.stats`.

Which metrics are headline and which task an effective-robustness fit prefers come from the task
registry (:mod:`featkit.tasks.registry`): a task that is not registered has every scalar metric
as headline and comes after the registered ones.

A "system" is what one row of a table compares: the model id, plus ``[features]`` when the same
model appears with several feature kinds, plus ``(file stem)`` when two files would otherwise
give the same (task, system, dataset) cell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.reporting.collect import Entry
from featkit.stats import (
    ALPHA,
    CLIP_EPS,
    MIN_DATASETS_FOR_RANKS,
    MIN_SYSTEMS_FOR_RANKS,
    RankTest,
    RobustnessFit,
    check_transform,
    effective_robustness,
    fit_robustness_line,
    friedman_nemenyi,
    inverse_transform,
    transform_accuracy,
)
from featkit.tasks.registry import TaskInfo, tasks

if TYPE_CHECKING:
    import pandas as pd


# --------------------------------------------------------------------------- task metadata


def is_headline(task: str, metric: str,
                registered: Mapping[str, TaskInfo] | None = None) -> bool:
    """Whether ``metric`` is a headline metric of ``task`` (the bars and rank tests of
    ``metrics="headline"``); every metric of a task that is not registered is.
    ``registered``: the registry's tasks, when the caller already has them."""
    info = (tasks() if registered is None else registered).get(task)
    return info is None or metric in info.headline


def shift_task_order(candidates: Iterable[str]) -> list[str]:
    """``candidates`` in the order an effective-robustness fit prefers them when no task is
    given: registered tasks by their ``shift_priority``, then the others (no priority, or not
    registered) by name."""
    registered = tasks()
    ranked: list[tuple[int, str]] = []
    rest: list[str] = []
    for task in candidates:
        info = registered.get(task)
        if info is not None and info.shift_priority is not None:
            ranked.append((info.shift_priority, task))
        else:
            rest.append(task)
    return [task for _, task in sorted(ranked)] + sorted(rest)


# --------------------------------------------------------------------------- tables


def _is_number(value: Any) -> bool:
    """A scalar metric (``null`` counts: it becomes NaN); lists, dicts and booleans do not."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def system_labels(entries: Sequence[Entry]) -> list[str]:
    """Row label of every record: model, ``[features]`` if the model has several kinds, and
    ``(file stem)`` if two files would otherwise fill the same (task, system, dataset) cell."""
    return label_records(entries)[0]


def label_records(entries: Sequence[Entry]) -> tuple[list[str], list[str]]:
    """(:func:`system_labels`, the base labels that needed a file name to be told apart)."""
    kinds: dict[str, set[str]] = {}
    for _, record in entries:
        kinds.setdefault(str(record["model"]), set()).add(str(record["features"]))
    labels = []
    for _, record in entries:
        model = str(record["model"])
        labels.append(model if len(kinds[model]) == 1 else f"{model} [{record['features']}]")
    cells: dict[tuple[str, str, str], int] = {}
    for (_, record), label in zip(entries, labels):
        key = (str(record["task"]), label, str(record["dataset"]))
        cells[key] = cells.get(key, 0) + 1
    out, clashes = [], []
    for (source, record), label in zip(entries, labels):
        if cells[(str(record["task"]), label, str(record["dataset"]))] > 1:
            clashes.append(label)
            label = f"{label} ({_source_stem(source)})"
        out.append(label)
    return out, sorted(set(clashes))


def _source_stem(source: str) -> str:
    """The file name part of a source, with its ``#i`` list index."""
    name = Path(source.split("#")[0]).stem if not source.startswith("<") else source.strip("<>")
    return name + (f"#{source.split('#')[1]}" if "#" in source else "")


def results_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """The tidy table: one row per (record, scalar metric) with columns ``source, task, model,
    features, system, dataset, merged, metric, value``. Values are the JSON's (fractions);
    ``null`` becomes NaN; list/dict metrics (e.g. a PGD sweep) are left to :func:`sweeps_frame`."""
    import pandas as pd

    labels = system_labels(entries)
    rows = []
    for (source, record), system in zip(entries, labels):
        for metric, value in record["metrics"].items():
            if not _is_number(value):
                continue
            rows.append({
                "source": source,
                "task": str(record["task"]),
                "model": str(record["model"]),
                "features": str(record["features"]),
                "system": system,
                "dataset": str(record["dataset"]),
                "merged": "per_dataset" in record,
                "metric": str(metric),
                "value": math.nan if value is None else float(value),
            })
    columns = ["source", "task", "model", "features", "system", "dataset", "merged", "metric",
               "value"]
    return pd.DataFrame(rows, columns=columns)


def sweeps_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """PGD sweeps (``metrics.sweep`` of ``perturb`` records) as one row per (record, budget):
    ``source, system, dataset, norm, eps_mode, eps, eps_rel, top1, success_rate,
    mean_delta_norm, clean_top1``."""
    import pandas as pd

    labels = system_labels(entries)
    rows = []
    for (source, record), system in zip(entries, labels):
        sweep = record["metrics"].get("sweep")
        if not isinstance(sweep, list):
            continue
        settings = record.get("settings", {})
        for point in sweep:
            rows.append({
                "source": source,
                "task": str(record["task"]),
                "system": system,
                "dataset": str(record["dataset"]),
                "norm": settings.get("norm"),
                "eps_mode": settings.get("eps_mode", "absolute"),
                "eps": _float(point.get("eps")),
                "eps_rel": _float(point.get("eps_rel")),
                "top1": _float(point.get("top1")),
                "success_rate": _float(point.get("success_rate")),
                "mean_delta_norm": _float(point.get("mean_delta_norm")),
                "clean_top1": _float(record["metrics"].get("clean_top1")),
            })
    columns = ["source", "task", "system", "dataset", "norm", "eps_mode", "eps", "eps_rel",
               "top1", "success_rate", "mean_delta_norm", "clean_top1"]
    return pd.DataFrame(rows, columns=columns)


def depth_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """Accuracy-vs-depth curves (``metrics.curve`` of ``layer_probe`` records): one row per
    (record, layer) with ``source, system, dataset, features, probe, panel, layer, depth,
    relative_depth, kind, top1, top5``; ``panel`` is ``"dataset: features (probe)"``."""
    import pandas as pd

    labels = system_labels(entries)
    rows = []
    for (source, record), system in zip(entries, labels):
        curve = record["metrics"].get("curve")
        if record["task"] != "layer_probe" or not isinstance(curve, list):
            continue
        probe = record.get("settings", {}).get("probe", "")
        for point in curve:
            rows.append({
                "source": source,
                "system": system,
                "dataset": str(record["dataset"]),
                "features": str(record["features"]),
                "probe": probe,
                "panel": f"{record['dataset']}: {record['features']} ({probe})",
                "layer": int(point["layer"]),
                "depth": int(point["depth"]),
                "relative_depth": _float(point.get("relative_depth")),
                "kind": str(point.get("kind", "")),
                "top1": _float(point.get("top1")),
                "top5": _float(point.get("top5")),
            })
    columns = ["source", "system", "dataset", "features", "probe", "panel", "layer", "depth",
               "relative_depth", "kind", "top1", "top5"]
    return pd.DataFrame(rows, columns=columns)


def _float(value: Any) -> float:
    """A JSON number as a float, ``null`` as NaN."""
    return math.nan if value is None else float(value)


def merged_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """Merged-probe comparisons (records with ``per_dataset``): one row per (record, dataset)
    with ``task, system, run, dataset, single, merged, drop`` (fractions; drop = single -
    merged) as the probe command wrote them."""
    import pandas as pd

    labels = system_labels(entries)
    rows = []
    for (_, record), system in zip(entries, labels):
        per_dataset = record.get("per_dataset")
        if not isinstance(per_dataset, Mapping):
            continue
        for dataset, row in per_dataset.items():
            rows.append({
                "task": str(record["task"]),
                "system": system,
                "run": str(record["dataset"]),
                "dataset": str(dataset),
                "single": _float(row.get("single")),
                "merged": _float(row.get("merged")),
                "drop": _float(row.get("drop")),
            })
    return pd.DataFrame(rows, columns=["task", "system", "run", "dataset", "single", "merged",
                                       "drop"])


def perturbed_frame(sweeps: pd.DataFrame, eps: float | None = None) -> pd.DataFrame:
    """Clean vs perturbed top-1 per (system, dataset) at one budget of each sweep: the point
    nearest ``eps`` (in the sweep's own units: ``eps_rel`` for relative sweeps, else ``eps``),
    or the largest budget when ``eps`` is None."""
    import pandas as pd

    rows = []
    for (source, system, dataset), group in sweeps.groupby(["source", "system", "dataset"],
                                                           sort=False):
        relative = (group["eps_mode"] == "relative").all() and group["eps_rel"].notna().all()
        key = "eps_rel" if relative else "eps"
        if eps is None:
            point = group.loc[group[key].idxmax()]
        else:
            point = group.loc[(group[key] - eps).abs().idxmin()]
        rows.append({
            "system": system,
            "dataset": dataset,
            "clean": point["clean_top1"],
            "perturbed": point["top1"],
            "eps": point["eps"],
            "eps_rel": point["eps_rel"],
            "budget": _budget_label(point, relative),
            "source": source,
        })
    return pd.DataFrame(rows, columns=["system", "dataset", "clean", "perturbed", "eps",
                                       "eps_rel", "budget", "source"])


def _budget_label(point: Any, relative: bool) -> str:
    """How a table names one PGD budget (``L2 ε = 0.1·‖x‖₂``)."""
    norm = {"linf": "L∞", "l2": "L2"}.get(str(point["norm"]), str(point["norm"]))
    if relative:
        unit = "‖x‖∞" if str(point["norm"]) == "linf" else "‖x‖₂"
        return f"{norm} ε = {point['eps_rel']:.3g}·{unit}"
    return f"{norm} ε = {point['eps']:.3g}"


def natural_key(name: str) -> list[tuple[int, int, str]]:
    """Sort key comparing digit runs as numbers and the rest case-insensitively."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", str(name)) if t]


def natural_sorted(names: Iterable[str]) -> list[str]:
    """Sorted with digit runs compared as numbers (``d2`` before ``d10``)."""
    return sorted(names, key=natural_key)


def metric_table(frame: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """System x dataset values of one (task, metric), exactly as in the JSON (fractions)."""
    part = frame[(frame["task"] == task) & (frame["metric"] == metric)]
    table = part.pivot(index="system", columns="dataset", values="value")
    table = table.reindex(index=natural_sorted(table.index), columns=natural_sorted(table.columns))
    table.columns.name = "dataset"
    table.index.name = "system"
    return table


def select_metrics(frame: pd.DataFrame, metrics: str | Sequence[str] = "headline"
                   ) -> list[tuple[str, str]]:
    """(task, metric) pairs to chart: ``"headline"`` (each task's registered headline metrics,
    all metrics of a task that is not registered), ``"all"``, or a list of metric names (kept
    where present)."""
    present = list(dict.fromkeys(zip(frame["task"], frame["metric"])))
    if metrics == "all":
        chosen = present
    elif metrics == "headline":
        registered = tasks()
        chosen = [(t, m) for t, m in present if is_headline(t, m, registered)]
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        chosen = [(t, m) for t, m in present if m in names]
    return sorted(chosen)


# --------------------------------------------------------------------------- statistics


def rank_test_for(frame: pd.DataFrame, task: str, metric: str, alpha: float = ALPHA
                  ) -> tuple[RankTest | None, str]:
    """The rank test of one (task, metric) over single-dataset records, or ``(None, reason)``
    when there are too few systems or complete datasets. Datasets where some system has no
    value are dropped (named in the reason / ``dropped_datasets``)."""
    part = frame[(frame["task"] == task) & (frame["metric"] == metric) & ~frame["merged"]]
    table = part.pivot(index="dataset", columns="system", values="value")
    table = table.reindex(index=natural_sorted(table.index), columns=natural_sorted(table.columns))
    complete = table.dropna(axis=0, how="any")
    dropped = tuple(d for d in table.index if d not in complete.index)
    k, n = complete.shape[1], complete.shape[0]
    if k < MIN_SYSTEMS_FOR_RANKS or n < MIN_DATASETS_FOR_RANKS:
        why = (
            f"needs >= {MIN_SYSTEMS_FOR_RANKS} systems on >= {MIN_DATASETS_FOR_RANKS} datasets "
            f"with a value for every system; have {k} system(s) on {n} complete dataset(s)"
        )
        if dropped:
            why += f" ({', '.join(dropped)} lack some systems)"
        return None, why
    test = friedman_nemenyi(complete, alpha=alpha, task=task, metric=metric)
    if dropped:
        test = replace(test, dropped_datasets=dropped)
    note = f"dropped datasets lacking some system: {', '.join(dropped)}" if dropped else ""
    return test, note


def parse_shift(text: str) -> tuple[str, str]:
    """``"imagenet:imagenet-r"`` -> ``("imagenet", "imagenet-r")``."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise FeatkitError(f"--shift must be REF:SHIFTED, e.g. imagenet:imagenet-r; got {text!r}")
    return parts[0].strip(), parts[1].strip()


def _matches(name: str, system: str, model: str) -> bool:
    """Whether a ``--baseline`` name means this system (its label or its model id)."""
    return name in (system, model) or model.startswith(name + " (") or system.startswith(
        name + " [")


def robustness_fit(
    frame: pd.DataFrame,
    reference: str,
    shifted: str,
    *,
    metric: str = "top1",
    task: str | None = None,
    baseline: Sequence[str] | None = None,
    transform: str = "probit",
    clip: float = CLIP_EPS,
) -> tuple[RobustnessFit | None, str]:
    """Pair each system's ``metric`` on ``reference`` and ``shifted`` (same task), fit the line
    over the ``baseline`` systems (model ids or system labels; default: all) and score every
    system. Returns ``(fit, note)`` or ``(None, reason)`` when the line cannot be fitted."""
    import pandas as pd

    check_transform(transform)
    single = frame[(frame["metric"] == metric) & ~frame["merged"]]
    candidates = [t for t in single["task"].unique()
                  if {reference, shifted} <= set(single.loc[single["task"] == t, "dataset"])]
    if task is None:
        ordered = shift_task_order(candidates)
        if not ordered:
            return None, (f"no task has {metric!r} results on both {reference!r} and {shifted!r}")
        task = ordered[0]
    elif task not in candidates:
        return None, (f"task {task!r} has no {metric!r} results on both {reference!r} and "
                      f"{shifted!r}")
    part = single[single["task"] == task]
    wide = part.pivot_table(index=["system", "model"], columns="dataset", values="value",
                            aggfunc="first")
    paired = wide[[reference, shifted]].dropna().reset_index()
    unknown = [b for b in (baseline or []) if not any(
        _matches(b, s, m) for s, m in zip(paired["system"], paired["model"]))]
    is_base = [
        baseline is None or any(_matches(b, s, m) for b in baseline)
        for s, m in zip(paired["system"], paired["model"])
    ]
    paired["baseline"] = is_base
    base = paired[paired["baseline"]]
    x = transform_accuracy(base[reference], transform, clip)
    if len(base) < 2 or np.ptp(x) == 0:
        return None, (
            f"{reference} -> {shifted}: the line needs >= 2 baseline systems with different "
            f"{reference} accuracies; have {len(base)} with both datasets ({task} {metric})"
        )
    slope, intercept = fit_robustness_line(base[reference], base[shifted], transform, clip)
    predicted = inverse_transform(slope * transform_accuracy(paired[reference], transform, clip)
                                  + intercept, transform)
    points = pd.DataFrame({
        "system": paired["system"],
        "ref": paired[reference].astype(float),
        "shifted": paired[shifted].astype(float),
        "predicted": predicted,
        "effective_robustness": effective_robustness(paired[reference], paired[shifted], slope,
                                                     intercept, transform, clip),
        "baseline": paired["baseline"].astype(bool),
    })
    note = f"baseline name(s) matching no system: {', '.join(unknown)}" if unknown else ""
    fit = RobustnessFit(reference, shifted, task, metric, transform, slope, intercept,
                        points.reset_index(drop=True), clip)
    return fit, note


# --------------------------------------------------------------------------- figure inputs


def curves_for_plot(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Sweep rows as plot curves: x = eps_rel for relative sweeps, else eps; one series per
    (system, norm); the clean accuracy as the eps = 0 point."""
    import pandas as pd

    parts = []
    for (_source, system, dataset), group in sweeps.groupby(["source", "system", "dataset"],
                                                           sort=False):
        relative = (group["eps_mode"] == "relative").all() and group["eps_rel"].notna().all()
        xs = group["eps_rel"] if relative else group["eps"]
        series = f"{system} ({group['norm'].iloc[0]})"
        clean = pd.DataFrame({"series": [series], "dataset": [dataset], "eps": [0.0],
                              "top1": [group["clean_top1"].iloc[0]]})
        body = pd.DataFrame({"series": series, "dataset": dataset, "eps": xs.to_numpy(),
                             "top1": group["top1"].to_numpy()})
        parts.append(pd.concat([clean, body[body["eps"] > 0]], ignore_index=True))
    return pd.concat(parts, ignore_index=True)


def sweep_xlabel(sweeps: pd.DataFrame) -> str:
    """The x-axis label of the accuracy-vs-eps figure: the sweeps' budget units."""
    modes = set(sweeps["eps_mode"])
    if modes == {"relative"}:
        return "ε / mean feature norm"
    if modes == {"absolute"}:
        return "ε (feature units)"
    return "ε (relative to the feature norm where the sweep was relative)"
