"""Reading result records: folders searched for ``*.json``, single files, or records in memory.

A JSON object counts as a record when it has :data:`RECORD_KEYS` and a ``metrics`` object (the
shape of :func:`featkit.results.make_result`); a file may hold one record or a list of them.
Files that are not records are skipped with a note, never an error, so a results folder can
hold other JSON too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from featkit.errors import FeatkitError

#: Keys a JSON object must have to count as a result record.
RECORD_KEYS = ("task", "model", "dataset", "features", "metrics")

#: One collected record and where it came from: the file (``path#i`` for the i-th record of a
#: list) or ``<record i>`` for the i-th record passed in memory.
Entry = tuple[str, Mapping[str, Any]]


def _is_record(obj: Any) -> bool:
    """Whether a JSON value has the keys of a result record and a metrics object."""
    return isinstance(obj, Mapping) and all(k in obj for k in RECORD_KEYS) and isinstance(
        obj["metrics"], Mapping
    )


def collect_results(
    sources: str | os.PathLike | Iterable[str | os.PathLike | Mapping[str, Any]],
) -> tuple[list[Entry], list[str]]:
    """Read result records from folders (searched recursively for ``*.json``), files, or
    records already in memory. Returns ``([(source, record), ...], notes)``; JSON files that are
    not result records are skipped with a note. Missing paths are an error."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[Entry] = []
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
    """What keeps ``obj`` from being a record, for the error message."""
    missing = [k for k in RECORD_KEYS if k not in obj]
    return ", ".join(missing) if missing else "a metrics object"


def _read_file(file: Path) -> tuple[list[Entry], str | None]:
    """The records of one file, or none and the reason it was skipped."""
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [], f"{file}: skipped, not valid JSON ({err})"
    if isinstance(data, Mapping) and isinstance(data.get("featkit_expected"), list):
        return [], None  # a suite's expected values (featkit.reporting.comparisons)
    items = data if isinstance(data, list) else [data]
    records = [item for item in items if _is_record(item)]
    if not records:
        return [], f"{file}: skipped, not a featkit result record"
    source = str(file)
    if len(items) > 1:
        return [(f"{source}#{i}", dict(r)) for i, r in enumerate(records)], None
    return [(source, dict(records[0]))], None

