"""Effective robustness from ``featkit shift`` records, with intervals from per-item scores.

A ``shift`` record holds both accuracies of one point: ``reference_top1`` (ImageNet val on the
shifted set's classes) and ``top1`` (the shifted set). :func:`robustness_fit_for` fits a
``REF:SHIFTED`` pair on those records when there are any (else on the records of one task on
both datasets, :func:`featkit.reporting.frames.robustness_fit`), and, when every point's records
carry per-item scores, adds the bootstrap intervals of :func:`featkit.stats.robustness_intervals`:
reference items are resampled from ``seed``, shifted items from ``seed + 1``, the same draws for
every system scored on the same items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.reporting.collect import Entry
from featkit.reporting.frames import robustness_fit, system_labels
from featkit.stats import RobustnessFit, robustness_intervals

if TYPE_CHECKING:
    import pandas as pd

    from featkit.tasks.intervals import Interval, ItemScores

#: The task whose records pair a shifted set with its reference.
SHIFT_TASK = "shift"


def _shift_entries(entries: Sequence[Entry], labels: Sequence[str], reference: str,
                   shifted: str, metric: str) -> list[tuple[str, Mapping[str, Any]]]:
    found = []
    for (_, record), system in zip(entries, labels):
        metrics = record["metrics"]
        if (record["task"] == SHIFT_TASK and record["dataset"] == shifted
                and record.get("reference", record.get("settings", {}).get("reference"))
                == reference and metric in metrics and f"reference_{metric}" in metrics):
            found.append((system, record))
    return found


def shift_frame(entries: Sequence[Entry], reference: str, shifted: str, metric: str = "top1"
                ) -> pd.DataFrame:
    """The shift records of ``REF:SHIFTED`` as a results frame of task ``shift`` on the two
    datasets (``reference_<metric>`` as the reference's value)."""
    import pandas as pd

    labels = system_labels(entries)
    rows = []
    for system, record in _shift_entries(entries, labels, reference, shifted, metric):
        for dataset, key in ((reference, f"reference_{metric}"), (shifted, metric)):
            value = record["metrics"][key]
            rows.append({"source": system, "task": SHIFT_TASK, "model": str(record["model"]),
                         "features": str(record["features"]), "system": system,
                         "dataset": dataset, "merged": False, "metric": metric,
                         "value": float("nan") if value is None else float(value)})
    return pd.DataFrame(rows, columns=["source", "task", "model", "features", "system",
                                       "dataset", "merged", "metric", "value"])


def robustness_fit_for(entries: Sequence[Entry], frame: pd.DataFrame, reference: str,
                       shifted: str, *, metric: str = "top1", task: str | None = None,
                       interval: Interval | None = None, **options: Any
                       ) -> tuple[RobustnessFit | None, str]:
    """The fit of one ``REF:SHIFTED`` pair (shift records first, unless another ``task`` is
    named), with intervals when ``interval`` is given and every point has per-item scores.
    ``options``: ``baseline``, ``transform``, ``clip`` of :func:`robustness_fit`."""
    pairs = shift_frame(entries, reference, shifted, metric) if task in (None, SHIFT_TASK) \
        else None
    if pairs is not None and len(pairs):
        fit, note = robustness_fit(pairs, reference, shifted, metric=metric, task=SHIFT_TASK,
                                   **options)
    else:
        fit, note = robustness_fit(frame, reference, shifted, metric=metric, task=task,
                                   **options)
    if fit is None or interval is None:
        return fit, note
    fitted, why = with_intervals(fit, entries, interval)
    return fitted, "; ".join(n for n in (note, why) if n)


def _items(entries: Sequence[Entry], fit: RobustnessFit
           ) -> tuple[list[ItemScores], list[ItemScores]] | str:
    """Each point's reference and shifted per-item scores, or why there are none (empty when
    no record of the fit has any: records written before per-item scores, nothing to say)."""
    from featkit.tasks.intervals import read_per_item

    labels = system_labels(entries)
    by_cell = {(str(r["task"]), system, str(r["dataset"])): r
               for (_, r), system in zip(entries, labels)}
    if fit.task == SHIFT_TASK:
        records = dict(_shift_entries(entries, labels, fit.reference, fit.shifted, fit.metric))
    if fit.task == SHIFT_TASK:
        involved = [records.get(system) for system in fit.points["system"]]
    else:
        involved = [by_cell.get((fit.task, system, dataset)) for system in fit.points["system"]
                    for dataset in (fit.reference, fit.shifted)]
    if not any(r is not None and r.get("per_item") for r in involved):
        return ""
    ref_items, shifted_items = [], []
    for system in fit.points["system"]:
        try:
            if fit.task == SHIFT_TASK:
                record = records[system]
                ref_items.append(read_per_item(record, f"reference_{fit.metric}"))
                shifted_items.append(read_per_item(record, fit.metric))
            else:
                for dataset, out in ((fit.reference, ref_items), (fit.shifted, shifted_items)):
                    out.append(read_per_item(by_cell[(fit.task, system, dataset)], fit.metric))
        except (FeatkitError, KeyError) as err:
            return f"no intervals: {err}"
    return ref_items, shifted_items


def _draws(items: Sequence[ItemScores], resamples: int, seed: int) -> np.ndarray:
    """``resamples x systems`` accuracies; systems scored on the same items share draws."""
    from probes.bootstrap import resample_means_shared

    out = np.empty((resamples, len(items)))
    groups: dict[tuple[str, int], list[int]] = {}
    for j, item in enumerate(items):
        groups.setdefault((item.ids_sha256, item.n), []).append(j)
    for columns in groups.values():
        matrix = np.stack([items[j].values.astype(np.float64) for j in columns], axis=1)
        out[:, columns] = resample_means_shared(matrix, resamples, seed)
    return out


def with_intervals(fit: RobustnessFit, entries: Sequence[Entry], interval: Interval
                   ) -> tuple[RobustnessFit, str]:
    """``fit`` with :class:`~featkit.stats.RobustnessIntervals` and the points' interval
    columns, or unchanged with the reason when some point lacks per-item scores."""
    found = _items(entries, fit)
    if isinstance(found, str):
        return fit, found
    ref_items, shifted_items = found
    ref = _draws(ref_items, interval.resamples, interval.seed)
    shifted = _draws(shifted_items, interval.resamples, interval.seed + 1)
    try:
        intervals = robustness_intervals(ref, shifted, fit.points["baseline"].to_numpy(),
                                         transform=fit.transform, clip=fit.clip,
                                         level=interval.level, seed=interval.seed)
    except FeatkitError as err:
        return fit, f"no intervals: {err}"
    points = fit.points.assign(
        ref_low=intervals.ref[:, 0], ref_high=intervals.ref[:, 1],
        shifted_low=intervals.shifted[:, 0], shifted_high=intervals.shifted[:, 1],
        er_low=intervals.effective_robustness[:, 0], er_high=intervals.effective_robustness[:, 1],
    )
    note = ""
    if intervals.used < interval.resamples:
        note = (f"{interval.resamples - intervals.used} of {interval.resamples} resamples had "
                f"one distinct baseline reference accuracy and were dropped")
    return replace(fit, points=points, intervals=intervals), note


def interval_summary(fit: RobustnessFit) -> str:
    """One line: the slope's and intercept's intervals and how they were drawn."""
    iv = fit.intervals
    if iv is None:
        return ""
    return (f"{100 * iv.level:g}% percentile bootstrap over test items ({iv.resamples} "
            f"resamples, seed {iv.seed}): slope [{iv.slope[0]:.4f}, {iv.slope[1]:.4f}], "
            f"intercept [{iv.intercept[0]:+.4f}, {iv.intercept[1]:+.4f}]")
