"""Turn a folder of result JSONs into the tables, statistics and figures papers need.

(The module is ``reporting``, not ``report``, so that ``featkit.report`` can be the function:
a submodule named ``report`` would replace a lazily exposed function of that name on import.)

``featkit report RESULTS_DIR --out DIR`` and :func:`report` collect every result record (the
shape of :func:`featkit.results.make_result`; a JSON file may hold one record or a list) into a
tidy table and derive:

- ``results.csv``: one row per (record, scalar metric), values exactly as in the JSON;
- ``report.md``: per (task, metric) a system x dataset table in percent, the clean-vs-perturbed
  table (FG-BMK Table 5), the merged-vs-single drops (FG-BMK Fig. 8), the rank statistics and the
  effective robustness fits;
- PNG figures: grouped bars per metric, merged vs single, clean vs perturbed, accuracy vs eps,
  Friedman + Nemenyi critical-difference diagrams (FG-BMK Figs 6-7) and effective robustness
  plots (seed 001).

Statistics (reference.md §2): Friedman via :func:`scipy.stats.friedmanchisquare`; Nemenyi
p-values via scikit-posthocs' ``posthoc_nemenyi_friedman``; the critical difference by the
formula ``CD = q_a * sqrt(k (k + 1) / (6 N))`` with ``q_a = studentized_range.ppf(1 - a, k, inf)
/ sqrt(2)``. Effective robustness: OLS of probit- (or logit-) transformed shifted accuracy on
transformed reference accuracy over the baseline models; a model's effective robustness is
``acc_shifted - inv(slope * t(acc_ref) + intercept)`` in accuracy points.

A "system" is what one row of a table compares: the model id, plus ``[features]`` when the same
model appears with several feature kinds, plus ``(file stem)`` when two files would otherwise
give the same (task, system, dataset) cell. Figures that lack the inputs their statistic needs
are skipped and the reason is recorded in :attr:`Report.skipped`, never raised.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Keys a JSON object must have to count as a result record.
RECORD_KEYS = ("task", "model", "dataset", "features", "metrics")

#: Metrics shown (bars, rank statistics) when ``metrics="headline"``; other tasks: all metrics.
HEADLINE_METRICS = {
    "retrieval": ("mAP", "mAP@R"),
    "linear_probe": ("top1",),
    "knn": ("top1",),
    "perturb": (),  # drawn as clean vs perturbed and accuracy vs eps instead
}

TRANSFORMS = ("probit", "logit")

#: Accuracies are clipped to [CLIP_EPS, 1 - CLIP_EPS] before the probit/logit transform.
CLIP_EPS = 1e-4

#: Preference order when the task of the effective-robustness fit is not given.
SHIFT_TASK_ORDER = ("linear_probe", "knn", "retrieval")

#: Friedman's test needs at least three systems (scipy) and we ask for at least two datasets.
MIN_SYSTEMS_FOR_RANKS = 3
MIN_DATASETS_FOR_RANKS = 2


# --------------------------------------------------------------------------- collecting


def _is_record(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(k in obj for k in RECORD_KEYS) and isinstance(
        obj["metrics"], Mapping
    )


def collect_results(
    sources: str | os.PathLike | Iterable[str | os.PathLike | Mapping[str, Any]],
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Read result records from folders (searched recursively for ``*.json``), files, or
    records already in memory. Returns ``([(source, record), ...], notes)``; JSON files that are
    not result records are skipped with a note. Missing paths are an error."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[tuple[str, dict[str, Any]]] = []
    notes: list[str] = []
    for index, source in enumerate(sources):
        if isinstance(source, Mapping):
            if not _is_record(source):
                raise FeatkitError(
                    f"in-memory result #{index} lacks {_missing_keys(source)}; pass records "
                    "built by featkit.results.make_result"
                )
            found.append((f"<record {index}>", dict(source)))
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not files:
                notes.append(f"{path}: no JSON files found")
        elif path.is_file():
            files = [path]
        else:
            raise FeatkitError(f"results path {path} does not exist; pass a folder of result JSONs")
        for file in files:
            found_here, note = _read_file(file)
            found += found_here
            if note:
                notes.append(note)
    return found, notes


def _missing_keys(obj: Mapping[str, Any]) -> str:
    missing = [k for k in RECORD_KEYS if k not in obj]
    return ", ".join(missing) if missing else "a metrics object"


def _read_file(file: Path) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [], f"{file}: skipped, not valid JSON ({err})"
    items = data if isinstance(data, list) else [data]
    records = [item for item in items if _is_record(item)]
    if not records:
        return [], f"{file}: skipped, not a featkit result record"
    source = str(file)
    if len(items) > 1:
        return [(f"{source}#{i}", dict(r)) for i, r in enumerate(records)], None
    return [(source, dict(records[0]))], None


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _system_labels(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Row label of every record: model, ``[features]`` if the model has several kinds, and
    ``(file stem)`` if two files would otherwise fill the same (task, system, dataset) cell."""
    return _label_records(entries)[0]


def _label_records(entries: Sequence[tuple[str, Mapping[str, Any]]]
                   ) -> tuple[list[str], list[str]]:
    """(labels, the base labels that needed a file name to be told apart)."""
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
    name = Path(source.split("#")[0]).stem if not source.startswith("<") else source.strip("<>")
    return name + (f"#{source.split('#')[1]}" if "#" in source else "")


def results_frame(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """The tidy table: one row per (record, scalar metric) with columns ``source, task, model,
    features, system, dataset, merged, metric, value``. Values are the JSON's (fractions);
    ``null`` becomes NaN; list/dict metrics (e.g. a PGD sweep) are left to :func:`sweeps_frame`."""
    import pandas as pd

    labels = _system_labels(entries)
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


def sweeps_frame(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """PGD sweeps (``metrics.sweep`` of ``perturb`` records) as one row per (record, budget):
    ``source, system, dataset, norm, eps_mode, eps, eps_rel, top1, success_rate,
    mean_delta_norm, clean_top1``."""
    import pandas as pd

    labels = _system_labels(entries)
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


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def merged_frame(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """Merged-probe comparisons (records with ``per_dataset``): one row per (record, dataset)
    with ``task, system, run, dataset, single, merged, drop`` (fractions; drop = single -
    merged) as the probe command wrote them."""
    import pandas as pd

    labels = _system_labels(entries)
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
    norm = {"linf": "L∞", "l2": "L2"}.get(str(point["norm"]), str(point["norm"]))
    if relative:
        unit = "‖x‖∞" if str(point["norm"]) == "linf" else "‖x‖₂"
        return f"{norm} ε = {point['eps_rel']:.3g}·{unit}"
    return f"{norm} ε = {point['eps']:.3g}"


def _natural_key(name: str) -> list[tuple[int, int, str]]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", str(name)) if t]


def natural_sorted(names: Iterable[str]) -> list[str]:
    """Sorted with digit runs compared as numbers (``d2`` before ``d10``)."""
    return sorted(names, key=_natural_key)


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
    """(task, metric) pairs to chart: ``"headline"`` (:data:`HEADLINE_METRICS`, all metrics for
    other tasks), ``"all"``, or a list of metric names (kept where present)."""
    present = list(dict.fromkeys(zip(frame["task"], frame["metric"])))
    if metrics == "all":
        chosen = present
    elif metrics == "headline":
        chosen = [(t, m) for t, m in present if t not in HEADLINE_METRICS
                  or m in HEADLINE_METRICS[t]]
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        chosen = [(t, m) for t, m in present if m in names]
    return sorted(chosen)


# --------------------------------------------------------------------------- rank statistics


def nemenyi_q_alpha(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical value q_a = studentized_range.ppf(1 - a, k, inf) / sqrt(2)."""
    from scipy.stats import studentized_range

    if k < 2:
        raise FeatkitError(f"the Nemenyi test compares at least 2 systems, got {k}")
    return float(studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: ``q_a * sqrt(k (k + 1) / (6 N))`` for k
    systems compared on N datasets (Demšar 2006)."""
    if n < 1:
        raise FeatkitError(f"the critical difference needs at least one dataset, got {n}")
    return nemenyi_q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def mean_ranks(values: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank of each column over the rows (1 = best; ties share the average rank)."""
    import pandas as pd
    from scipy.stats import rankdata

    data = values.to_numpy(dtype=float)
    ranks = rankdata(-data if higher_is_better else data, axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=values.columns, name="mean_rank")


def nonsignificant_groups(pvalues: pd.DataFrame, alpha: float = 0.05) -> list[tuple[str, ...]]:
    """Maximal groups of systems whose pairwise p-values are all >= alpha (the cliques a CD
    diagram joins with a bar), each ordered as in ``pvalues``; singletons are left out."""
    names = list(pvalues.index)
    linked = {a: {b for b in names if b != a and pvalues.loc[a, b] >= alpha} for a in names}
    cliques: list[set[str]] = []

    def expand(current: set[str], candidates: set[str], excluded: set[str]) -> None:
        if not candidates and not excluded:
            cliques.append(current)
            return
        for name in [n for n in names if n in candidates]:
            expand(current | {name}, candidates & linked[name], excluded & linked[name])
            candidates = candidates - {name}
            excluded = excluded | {name}

    expand(set(), set(names), set())
    groups = [tuple(n for n in names if n in c) for c in cliques if len(c) > 1]
    return sorted(groups, key=lambda g: [names.index(n) for n in g])


@dataclass(frozen=True)
class RankTest:
    """Friedman test + Nemenyi post-hoc comparison of k systems over N datasets."""

    task: str
    metric: str
    values: pd.DataFrame  # N datasets x k systems (fractions)
    mean_ranks: pd.Series  # per system, 1 = best
    statistic: float  # Friedman chi-square
    pvalue: float  # Friedman p-value
    pvalues: pd.DataFrame  # Nemenyi pairwise p-values, k x k
    cd: float
    q_alpha: float
    alpha: float
    groups: tuple[tuple[str, ...], ...]  # maximal non-significant groups
    dropped_datasets: tuple[str, ...] = ()

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def summary(self) -> str:
        """One line: test, p-value, k, N, CD."""
        return (
            f"{self.task} {self.metric}: Friedman chi2 = {self.statistic:.4g}, "
            f"p = {self.pvalue:.4g} (k = {self.k} systems, N = {self.n} datasets); "
            f"Nemenyi CD (alpha = {self.alpha:g}) = {self.cd:.4f}"
        )


def friedman_nemenyi(
    values: pd.DataFrame,
    *,
    alpha: float = 0.05,
    task: str = "",
    metric: str = "",
    higher_is_better: bool = True,
) -> RankTest:
    """Friedman's test and the Nemenyi post-hoc test over a complete N datasets x k systems
    table (rows = blocks). Needs k >= 3 and N >= 2."""
    import scikit_posthocs
    from scipy.stats import friedmanchisquare

    if values.isna().any().any():
        raise FeatkitError("the rank tests need a complete table; drop datasets with gaps first")
    n, k = values.shape
    if k < MIN_SYSTEMS_FOR_RANKS or n < MIN_DATASETS_FOR_RANKS:
        raise FeatkitError(
            f"Friedman's test needs >= {MIN_SYSTEMS_FOR_RANKS} systems on >= "
            f"{MIN_DATASETS_FOR_RANKS} datasets; got {k} on {n}"
        )
    data = values.to_numpy(dtype=float)
    if (data == data[:, :1]).all():
        statistic, pvalue = 0.0, 1.0  # every dataset ties every system: no evidence at all
    else:
        statistic, pvalue = friedmanchisquare(*data.T)
    pvalues = scikit_posthocs.posthoc_nemenyi_friedman(data)
    pvalues.index = pvalues.columns = list(values.columns)
    ranks = mean_ranks(values, higher_is_better)
    return RankTest(
        task=task,
        metric=metric,
        values=values,
        mean_ranks=ranks,
        statistic=float(statistic),
        pvalue=float(pvalue),
        pvalues=pvalues,
        cd=critical_difference(k, n, alpha),
        q_alpha=nemenyi_q_alpha(k, alpha),
        alpha=alpha,
        groups=tuple(nonsignificant_groups(pvalues, alpha)),
    )


def rank_test_for(frame: pd.DataFrame, task: str, metric: str, alpha: float = 0.05
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
        test = _with_dropped(test, dropped)
    note = f"dropped datasets lacking some system: {', '.join(dropped)}" if dropped else ""
    return test, note


def _with_dropped(test: RankTest, dropped: tuple[str, ...]) -> RankTest:
    from dataclasses import replace

    return replace(test, dropped_datasets=dropped)


# --------------------------------------------------------------------------- effective robustness


def transform_accuracy(acc: Any, transform: str = "probit", clip: float = CLIP_EPS) -> np.ndarray:
    """Probit (``norm.ppf``) or logit of accuracies clipped to ``[clip, 1 - clip]``."""
    from scipy.special import logit
    from scipy.stats import norm

    a = np.clip(np.asarray(acc, dtype=float), clip, 1.0 - clip)
    if transform == "probit":
        return norm.ppf(a)
    if transform == "logit":
        return logit(a)
    raise FeatkitError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")


def inverse_transform(z: Any, transform: str = "probit") -> np.ndarray:
    """Accuracy from a transformed value (``norm.cdf`` or ``expit``)."""
    from scipy.special import expit
    from scipy.stats import norm

    z = np.asarray(z, dtype=float)
    if transform == "probit":
        return norm.cdf(z)
    if transform == "logit":
        return expit(z)
    raise FeatkitError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")


def fit_robustness_line(acc_ref: Any, acc_shifted: Any, transform: str = "probit",
                        clip: float = CLIP_EPS) -> tuple[float, float]:
    """OLS ``t(acc_shifted) = slope * t(acc_ref) + intercept`` over baseline models."""
    x = transform_accuracy(acc_ref, transform, clip)
    y = transform_accuracy(acc_shifted, transform, clip)
    if x.size < 2 or np.ptp(x) == 0:
        raise FeatkitError(
            "the robustness line needs >= 2 baseline models with different reference accuracies"
        )
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def effective_robustness(acc_ref: Any, acc_shifted: Any, slope: float, intercept: float,
                         transform: str = "probit", clip: float = CLIP_EPS) -> np.ndarray:
    """``acc_shifted - inv(slope * t(acc_ref) + intercept)`` in accuracy points (x 100)."""
    predicted = inverse_transform(slope * transform_accuracy(acc_ref, transform, clip)
                                  + intercept, transform)
    return 100.0 * (np.asarray(acc_shifted, dtype=float) - predicted)


@dataclass(frozen=True)
class RobustnessFit:
    """The baseline line of one distribution shift and every system's effective robustness.

    ``points``: system, ref, shifted (fractions), predicted (fraction on the line),
    effective_robustness (accuracy points), baseline (bool)."""

    reference: str
    shifted: str
    task: str
    metric: str
    transform: str
    slope: float
    intercept: float
    points: pd.DataFrame
    clip: float = CLIP_EPS

    def predict(self, acc_ref: Any) -> np.ndarray:
        return inverse_transform(self.slope * transform_accuracy(acc_ref, self.transform,
                                                                 self.clip) + self.intercept,
                                 self.transform)

    def summary(self) -> str:
        n_base = int(self.points["baseline"].sum())
        return (
            f"{self.reference} -> {self.shifted} ({self.task} {self.metric}, {self.transform}): "
            f"t(shifted) = {self.slope:.4f} t(ref) {self.intercept:+.4f} over {n_base} baseline "
            "model(s)"
        )


def parse_shift(text: str) -> tuple[str, str]:
    """``"imagenet:imagenet-r"`` -> ``("imagenet", "imagenet-r")``."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise FeatkitError(f"--shift must be REF:SHIFTED, e.g. imagenet:imagenet-r; got {text!r}")
    return parts[0].strip(), parts[1].strip()


def _matches(name: str, system: str, model: str) -> bool:
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

    if transform not in TRANSFORMS:
        raise FeatkitError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
    single = frame[(frame["metric"] == metric) & ~frame["merged"]]
    tasks = [t for t in single["task"].unique()
             if {reference, shifted} <= set(single.loc[single["task"] == t, "dataset"])]
    if task is None:
        ordered = [t for t in SHIFT_TASK_ORDER if t in tasks] + sorted(
            t for t in tasks if t not in SHIFT_TASK_ORDER)
        if not ordered:
            return None, (f"no task has {metric!r} results on both {reference!r} and {shifted!r}")
        task = ordered[0]
    elif task not in tasks:
        return None, f"task {task!r} has no {metric!r} results on both {reference!r} and {shifted!r}"
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


# --------------------------------------------------------------------------- the report


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

    def markdown(self) -> str:
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
    alpha: float = 0.05,
    perturb_eps: float | None = None,
    figures: bool = True,
    dpi: int = 150,
) -> Report:
    """Collect result records (folders, files or in-memory records) into a :class:`Report`:
    tables, rank statistics, effective robustness and figures. With ``out`` it is also written
    there (see :meth:`Report.write`).

    ``metrics``: which (task, metric) pairs get bars and rank statistics (``"headline"``,
    ``"all"`` or metric names). ``shifts``: ``"REF:SHIFTED"`` pairs for effective robustness,
    fitted over ``baseline`` (model ids; default all) with the ``transform`` (probit or logit)
    on ``shift_metric`` of ``shift_task`` (default: linear_probe, else knn, else retrieval).
    ``perturb_eps``: the budget of the clean-vs-perturbed table (default: each sweep's
    largest). ``figures=False`` computes tables and statistics only; ``dpi`` is the PNG
    resolution when writing."""
    from featkit import plots

    if transform not in TRANSFORMS:
        raise FeatkitError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
    if not 0.0 < alpha < 1.0:
        raise FeatkitError(f"alpha must lie in (0, 1), got {alpha}")
    if isinstance(baseline, str):
        baseline = [b.strip() for b in baseline.split(",") if b.strip()] or None
    entries, notes = collect_results(results)
    if not entries:
        raise FeatkitError(
            f"no result records found in {results if isinstance(results, (str, Path)) else 'the inputs'}; "
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
    )
    for task, metric in sorted(dict.fromkeys(zip(frame["task"], frame["metric"]))):
        rep.tables[f"{task}/{metric}"] = metric_table(frame, task, metric)
    clashes = _label_records(entries)[1]
    if clashes:
        rep.notes.append(
            "several files give the same (task, system, dataset); their rows carry the file "
            f"name: {', '.join(clashes)}"
        )

    chosen = select_metrics(frame, metrics)
    for task, metric in chosen:
        key = f"{task}/{metric}"
        test, note = rank_test_for(frame, task, metric, alpha)
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

    for item in shifts:
        reference, shifted = parse_shift(item) if isinstance(item, str) else item
        key = f"{reference}:{shifted}"
        name = figure_name("effective_robustness", reference, shifted)
        fit, note = robustness_fit(frame, reference, shifted, metric=shift_metric,
                                   task=shift_task, baseline=baseline, transform=transform)
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
                _curves_for_plot(sweeps), x="eps", hue="series", facet="dataset",
                xlabel=_sweep_xlabel(sweeps))
    else:
        reason = "no perturb results (featkit perturb ... --json ...)"
        rep.skipped["clean_vs_perturbed"] = f"clean vs perturbed: {reason}"
        rep.skipped["accuracy_vs_eps"] = f"accuracy vs eps: {reason}"
    if out is not None:
        rep.write(out, dpi=dpi)
    return rep


def _curves_for_plot(sweeps: pd.DataFrame) -> pd.DataFrame:
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


def _sweep_xlabel(sweeps: pd.DataFrame) -> str:
    modes = set(sweeps["eps_mode"])
    if modes == {"relative"}:
        return "ε / mean feature norm"
    if modes == {"absolute"}:
        return "ε (feature units)"
    return "ε (relative to the feature norm where the sweep was relative)"


# --------------------------------------------------------------------------- markdown


def _pct(value: Any) -> str:
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
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def render_markdown(rep: Report) -> str:
    """The whole report as Markdown."""
    import pandas as pd

    lines = ["# featkit report", ""]
    tasks = sorted(set(rep.results["task"]))
    lines.append(
        f"{len(rep.sources)} result record(s); tasks: {', '.join(tasks)}; "
        f"{rep.results['system'].nunique()} system(s); "
        f"{rep.results['dataset'].nunique()} dataset(s). Values in percent."
    )
    lines.append("")
    def headline_first(key: str) -> tuple[str, bool, list]:
        task, metric = key.split("/", 1)
        return task, metric not in HEADLINE_METRICS.get(task, (metric,)), _natural_key(metric)

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
        table = fit.points.assign(
            ref=fit.points["ref"].map(_pct),
            shifted=fit.points["shifted"].map(_pct),
            predicted=fit.points["predicted"].map(_pct),
            effective_robustness=fit.points["effective_robustness"].map(lambda v: f"{v:+.2f}"),
        ).rename(columns={"ref": fit.reference, "shifted": fit.shifted,
                          "effective_robustness": "effective robustness (points)"})
        lines += [_plain_table(table), ""]
    lines += ["## Figures", ""]
    for name in rep.figures:
        lines.append(f"- `{name}.png`")
    for name, reason in rep.skipped.items():
        lines.append(f"- skipped `{name}`: {reason}")
    if rep.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rep.notes]
    return "\n".join(lines) + "\n"


def _plain_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(
        index=False)]
    return "\n".join([header, rule, *body])
