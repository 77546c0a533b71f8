"""Two comparisons a suite's report needs: FG-BMK's protocol next to the corrected one, and the
published values next to the measured ones.

- An FG-BMK record (``settings.protocol == "fgbmk"``) names in ``compare_with`` the corrected task
  and, per metric, the corrected metric it stands next to; :func:`protocol_frame` pairs it with
  the corrected records of the same model and dataset (the same feature kind first).
- A suite writes its published values to ``expected.json`` in its out folder
  (``{"featkit_expected": [{task, model, dataset, metric, value, source, features}, ...]}``,
  values as fractions); :func:`collect_expected` finds those files and :func:`expected_frame`
  gives "expected / measured / difference" per cell, with a row for every expected value even
  when nothing measured it yet (``perturbed_top1``: a PGD sweep's top-1 at its largest budget).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featkit.reporting.collect import Entry

if TYPE_CHECKING:
    import pandas as pd

#: The key that marks a JSON file of expected values (not a record, never a note).
EXPECTED_KEY = "featkit_expected"
#: The file name a suite writes its expected values to.
EXPECTED_FILE = "expected.json"

PROTOCOL_COLUMNS = ["model", "dataset", "task", "metric", "features", "fgbmk", "corrected_task",
                    "corrected_metric", "corrected_features", "corrected", "difference"]
EXPECTED_COLUMNS = ["task", "model", "dataset", "metric", "features", "expected", "measured",
                    "difference", "source"]


def is_expected_file(data: Any) -> bool:
    """Whether a JSON value is a file of expected values."""
    return isinstance(data, Mapping) and isinstance(data.get(EXPECTED_KEY), list)


def collect_expected(sources: str | os.PathLike | Iterable[Any]) -> list[dict[str, Any]]:
    """The expected values in ``expected.json`` files of the result folders (or given as
    files); in-memory records are skipped."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        if isinstance(source, Mapping):
            continue
        path = Path(source)
        if path.is_dir():
            files += sorted(path.rglob(EXPECTED_FILE))
        elif path.is_file() and path.name == EXPECTED_FILE:
            files.append(path)
    found: list[dict[str, Any]] = []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if is_expected_file(data):
            found += [dict(item) for item in data[EXPECTED_KEY] if isinstance(item, Mapping)]
    return found


#: The metric name an expected value uses for a PGD sweep's top-1 at its largest budget.
PERTURBED = "perturbed_top1"


def _metric(record: Mapping[str, Any], name: str) -> float:
    """A record's scalar metric; ``perturbed_top1`` of a sweep is the top-1 at its largest
    budget (as the clean-vs-perturbed table shows by default)."""
    metrics = record.get("metrics", {})
    value = metrics.get(name)
    sweep = metrics.get("sweep")
    if value is None and name == PERTURBED and isinstance(sweep, list) and sweep:
        value = max(sweep, key=lambda p: (p.get("eps") or 0.0)).get("top1")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else math.nan


def protocol_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """One row per (FG-BMK record, metric, corrected record): both values (fractions) and the
    difference FG-BMK - corrected. Corrected records of the same model and dataset with the
    FG-BMK record's feature kind are used when there are any, else every one of them."""
    import pandas as pd

    records = [r for _, r in entries]
    rows = []
    for record in records:
        compare = record.get("compare_with")
        if record.get("settings", {}).get("protocol") != "fgbmk" or not isinstance(
                compare, Mapping):
            continue
        peers = [r for r in records if r.get("task") == compare.get("task")
                 and r.get("model") == record["model"] and r.get("dataset") == record["dataset"]
                 and "per_dataset" not in r]
        same = [r for r in peers if r.get("features") == record["features"]]
        for metric, corrected_metric in dict(compare.get("metrics", {})).items():
            for peer in (same or peers or [None]):
                fgbmk = _metric(record, metric)
                corrected = math.nan if peer is None else _metric(peer, corrected_metric)
                rows.append({
                    "model": record["model"], "dataset": record["dataset"],
                    "task": record["task"], "metric": metric, "features": record["features"],
                    "fgbmk": fgbmk, "corrected_task": compare.get("task"),
                    "corrected_metric": corrected_metric,
                    "corrected_features": None if peer is None else peer.get("features"),
                    "corrected": corrected, "difference": fgbmk - corrected,
                })
    return pd.DataFrame(rows, columns=PROTOCOL_COLUMNS)


def expected_frame(entries: Sequence[Entry], expected: Sequence[Mapping[str, Any]]
                   ) -> pd.DataFrame:
    """One row per expected value and matching record (task, model, dataset, metric, and
    features when the expected value names them): expected, measured and measured - expected
    (fractions); ``measured`` is NaN where no record matches yet."""
    import pandas as pd

    rows = []
    for item in expected:
        matches = [r for _, r in entries
                   if r.get("task") == item.get("task") and r.get("model") == item.get("model")
                   and r.get("dataset") == item.get("dataset")
                   and item.get("features") in (None, r.get("features"))
                   and "per_dataset" not in r]
        want = float(item.get("value", math.nan))
        for record in matches or [None]:
            measured = math.nan if record is None else _metric(record, str(item.get("metric")))
            rows.append({
                "task": item.get("task"), "model": item.get("model"),
                "dataset": item.get("dataset"), "metric": item.get("metric"),
                "features": None if record is None else record.get("features"),
                "expected": want, "measured": measured, "difference": measured - want,
                "source": item.get("source", ""),
            })
    return pd.DataFrame(rows, columns=EXPECTED_COLUMNS)
