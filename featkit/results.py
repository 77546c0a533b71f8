"""The one JSON shape every analysis command writes, and its readable table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit._version import __version__


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def make_result(
    task: str,
    *,
    model: str,
    dataset: str,
    features: str,
    metrics: Mapping[str, Any],
    settings: Mapping[str, Any],
    provenance: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Build the result record: ``task, model, dataset, features, metrics, settings, provenance,
    featkit_version, warnings`` (metrics as fractions in [0, 1]; ``warnings`` what a reader
    must know about the result, e.g. a C at the edge of its grid); ``extra`` adds task-specific
    keys."""
    record: dict[str, Any] = {
        "task": task,
        "model": model,
        "dataset": dataset,
        "features": features,
        "metrics": dict(metrics),
        "settings": dict(settings),
        "provenance": dict(provenance),
        "featkit_version": __version__,
        "warnings": list(warnings),
    }
    if extra:
        record.update(extra)
    return _jsonable(record)


def write_result(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a result record as indented JSON (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def format_table(rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    """A plain-text table; floats in [0, 1] print as percentages with two decimals."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if not 0.0 <= v <= 1.0 else f"{100 * v:.2f}"
        return "" if v is None else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def metrics_table(record: Mapping[str, Any]) -> str:
    """The metrics of one result as a two-column table (percentages), then its warnings."""
    rows = [{"metric": k, "value": v} for k, v in record["metrics"].items() if not isinstance(v, (dict, list))]
    return format_table(rows, ["metric", "value"]) + warnings_text(record)


def warnings_text(record: Mapping[str, Any]) -> str:
    """The record's warnings as ``warning: ...`` lines (empty when there are none)."""
    return "".join(f"\nwarning: {w}" for w in record.get("warnings") or ())
