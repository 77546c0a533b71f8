"""Per-item scores in result records, and the bootstrap intervals ``--ci`` adds to them.

Every record stores, under ``per_item``, the scores whose mean is each interval-able metric
(``top1``: 0/1 correctness per test item; ``mAP``: average precision per scored query), so an
interval or a paired comparison (``featkit compare``) can be recomputed from the JSON alone,
without features. The encoding is compact: 0/1 scores as packed bits in base64 (6.3 kB for
50,000 items), other scores as little-endian float32 in base64; ``ids_sha256`` is the digest of
the items' sample ids in order, so two records are compared only on the same items.

With an :class:`Interval` in a task's settings the record also gets ``ci``: a percentile
bootstrap interval per metric (:func:`probes.bootstrap.bootstrap_mean`), its level, resamples
and seed. For merged runs the items of each dataset are resampled within that dataset
(``strata``) and each dataset gets its own interval too.

Metrics that are no mean of per-item scores (ROC-AUC, TAR at a FAR, worst-group accuracy,
macro-AUROC) get a :class:`Recomputed` interval instead: the items are resampled and the
statistic recomputed on each resample (:func:`probes.bootstrap.bootstrap_statistics`). Their
``ci`` row says so (``method``: :data:`RECOMPUTED_METHOD`, ``resampling``: what was resampled
and how), and the record lists them under ``recomputed_metrics`` whether or not ``--ci`` was
given, so ``featkit compare`` refuses them in one line: a paired comparison needs the items'
raw scores, which the record does not keep.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from probes.bootstrap import LEVEL, RESAMPLES, BootstrapInterval, check_level, check_resamples

#: How the record names the method.
METHOD = "percentile bootstrap"
#: The ``method`` of a ``ci`` row whose statistic is recomputed on every resample.
RECOMPUTED_METHOD = "statistic recomputed on each resample"


@dataclass(frozen=True)
class Interval:
    """``--ci LEVEL``: a percentile bootstrap interval at ``level`` from ``resamples``
    resamples, drawn from ``seed`` (recorded): of each metric's per-item scores, or of the items
    a recomputed metric (:class:`Recomputed`) is computed from."""

    level: float = LEVEL
    resamples: int = RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            check_level(self.level)
            check_resamples(self.resamples)
        except FeatkitError as err:
            raise FeatkitError(f"--ci: {err}") from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FeatkitError(f"--ci-seed must be a non-negative integer, got {self.seed!r}")

    def settings(self) -> dict[str, Any]:
        return {"level": self.level, "method": METHOD, "resamples": self.resamples,
                "seed": self.seed}


def ids_digest(sample_ids: Iterable[Any]) -> str:
    """sha256 of the sample ids in order (one per line): equal digests, same items."""
    digest = hashlib.sha256()
    for sample_id in sample_ids:
        digest.update(str(sample_id).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class ItemScores:
    """One metric's per-item scores (their mean is the metric) and which items they are.

    ``strata``: ``(dataset, count)`` of consecutive item blocks in a merged run."""

    values: np.ndarray = field(repr=False)
    ids_sha256: str
    unit: str = "test items"
    strata: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, values: Any, sample_ids: Iterable[Any], *, unit: str = "test items",
           strata: Iterable[tuple[str, int]] = ()) -> ItemScores:
        """Scores of the items named by ``sample_ids`` (same order)."""
        ids = list(sample_ids)
        array = np.asarray(values)
        if array.ndim != 1 or array.shape[0] != len(ids):
            raise FeatkitError(f"{array.shape} per-item scores for {len(ids)} items")
        return cls(array, ids_digest(ids), unit, tuple((str(s), int(n)) for s, n in strata))

    @property
    def binary(self) -> bool:
        return self.values.dtype == bool

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def encode(self) -> dict[str, Any]:
        """The record's ``per_item`` entry."""
        if self.binary:
            encoding, raw = "bits", np.packbits(self.values).tobytes()
        else:
            encoding, raw = "float32", self.values.astype("<f4").tobytes()
        entry: dict[str, Any] = {"unit": self.unit, "n": self.n, "ids_sha256": self.ids_sha256,
                                 "encoding": encoding,
                                 "data": base64.b64encode(raw).decode("ascii")}
        if self.strata:
            entry["strata"] = [[name, count] for name, count in self.strata]
        return entry

    @classmethod
    def decode(cls, entry: Mapping[str, Any], where: str = "per_item") -> ItemScores:
        """Read an entry :meth:`encode` wrote; a malformed one is a one-line error."""
        try:
            n, encoding = int(entry["n"]), entry["encoding"]
            raw = base64.b64decode(entry["data"], validate=True)
            if encoding == "bits":
                values = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)
            elif encoding == "float32":
                values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
            else:
                raise ValueError(f"unknown encoding {encoding!r}")
            if values.shape[0] != n:
                raise ValueError(f"{values.shape[0]} values for n = {n}")
            strata = tuple((str(s), int(c)) for s, c in entry.get("strata", ()))
            return cls(values, str(entry["ids_sha256"]), str(entry.get("unit", "items")), strata)
        except (KeyError, TypeError, ValueError) as err:
            raise FeatkitError(f"{where}: not a per-item score entry ({err})") from None


def per_item_record(scores: Mapping[str, ItemScores]) -> dict[str, dict[str, Any]]:
    """``{metric: entry}`` for the record's ``per_item`` key."""
    return {metric: item.encode() for metric, item in scores.items()}


def read_per_item(record: Mapping[str, Any], metric: str) -> ItemScores:
    """One metric's per-item scores from a record; records without them say so in one line."""
    entries = record.get("per_item")
    what = f"{record.get('task')} record of {record.get('model')} on {record.get('dataset')}"
    if not isinstance(entries, Mapping) or not entries:
        raise FeatkitError(f"the {what} has no per-item scores (written by an older featkit?); "
                           f"rerun the command to get them")
    if metric not in entries:
        raise FeatkitError(f"the {what} has no per-item scores of {metric!r} (it has "
                           f"{', '.join(entries)})")
    return ItemScores.decode(entries[metric], f"{what}: per_item.{metric}")


def interval_record(scores: Mapping[str, ItemScores], interval: Interval,
                    estimates: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The record's ``ci``: the interval's settings and, per metric, ``estimate, low, high, n,
    unit`` (and ``per_stratum`` for merged runs). ``estimates``: the record's metric values,
    reported as the estimates (equal to the item means up to float32 rounding)."""
    from probes.bootstrap import bootstrap_mean

    metrics: dict[str, Any] = {}
    for metric, item in scores.items():
        options = dict(level=interval.level, resamples=interval.resamples, seed=interval.seed)
        sizes = [count for _, count in item.strata] or None
        result = bootstrap_mean(item.values, strata=sizes, **options)
        row: dict[str, Any] = {**result.row(), "unit": item.unit}
        if estimates is not None and metric in estimates:
            row["estimate"] = float(estimates[metric])
        if item.strata:
            row["per_stratum"] = {}
            start = 0
            for name, count in item.strata:
                part = bootstrap_mean(item.values[start:start + count], **options)
                row["per_stratum"][name] = part.row()
                start += count
        metrics[metric] = row
    return {**interval.settings(), "metrics": metrics}


@dataclass(frozen=True)
class Recomputed:
    """The interval of a metric that is no mean of per-item scores: ``result`` from
    :func:`probes.bootstrap.bootstrap_statistics` over ``unit``; ``resampling`` says what was
    resampled and what was held fixed (e.g. "test pairs, within same and different pairs; the
    val threshold fixed")."""

    result: BootstrapInterval
    unit: str
    resampling: str

    def row(self) -> dict[str, Any]:
        """The metric's ``ci`` row."""
        return {**self.result.row(), "unit": self.unit, "method": RECOMPUTED_METHOD,
                "resampling": self.resampling}


def recompute(arrays: Sequence[np.ndarray], statistics: Mapping[str, Any], interval: Interval,
              *, unit: str, resampling: str | Mapping[str, str],
              strata: np.ndarray | None = None) -> dict[str, Recomputed]:
    """:class:`Recomputed` intervals of ``statistics`` (``{metric: fn(*arrays)}``) of the items
    in ``arrays`` at the ``interval``'s settings, all from the same resamples. ``resampling``:
    one text for all, or one per metric."""
    from probes.bootstrap import bootstrap_statistics

    results = bootstrap_statistics(arrays, statistics, level=interval.level,
                                   resamples=interval.resamples, seed=interval.seed,
                                   strata=strata)
    return {metric: Recomputed(result, unit, resampling if isinstance(resampling, str)
                               else resampling[metric])
            for metric, result in results.items()}


def recomputed_metrics(record: Mapping[str, Any]) -> dict[str, str]:
    """``{metric: resampling}`` of the record's metrics whose intervals are recomputed."""
    listed = record.get("recomputed_metrics")
    return dict(listed) if isinstance(listed, Mapping) else {}


def interval_lines(record: Mapping[str, Any]) -> str:
    """The record's intervals as ``metric: low - high`` lines (empty without ``ci``)."""
    ci = record.get("ci")
    if not isinstance(ci, Mapping):
        return ""
    head = (f"\n{100 * ci['level']:g}% {ci['method']} intervals ({ci['resamples']} resamples, "
            f"seed {ci['seed']}):")
    lines = [head]
    for metric, row in ci["metrics"].items():
        recomputed = " (recomputed per resample)" if row.get("method") == RECOMPUTED_METHOD \
            else ""
        lines.append(f"  {metric}: {100 * row['estimate']:.2f} [{100 * row['low']:.2f}, "
                     f"{100 * row['high']:.2f}] over {row['n']} {row['unit']}{recomputed}")
        for name, part in row.get("per_stratum", {}).items():
            lines.append(f"    {name}: {100 * part['estimate']:.2f} [{100 * part['low']:.2f}, "
                         f"{100 * part['high']:.2f}] over {part['n']}")
    return "\n".join(lines)


def refuse_interval(task: str, why: str) -> FeatkitError:
    """The one-line error of a task that cannot give an interval (yet)."""
    return FeatkitError(f"{task}: --ci is not available: {why}")


def attach_item_scores(extra: dict[str, Any], items: Mapping[str, ItemScores],
                       interval: Interval | None, metrics: Mapping[str, Any], *,
                       recomputed: Mapping[str, Recomputed] | None = None,
                       resampling: Mapping[str, str] | None = None) -> None:
    """Add a record's ``per_item`` (always) and ``ci`` (with an ``interval``) to ``extra``.

    ``resampling``: ``{metric: how it is resampled}`` of the metrics without per-item means,
    written as ``recomputed_metrics`` (always); ``recomputed``: their intervals (with
    ``interval``), added to ``ci`` after the per-item ones."""
    extra["per_item"] = per_item_record(items)
    if resampling:
        extra["recomputed_metrics"] = dict(resampling)
    if interval is not None:
        extra["ci"] = interval_record(items, interval, metrics)
        for metric, entry in (recomputed or {}).items():
            extra["ci"]["metrics"][metric] = entry.row()


def merged_items(correct: np.ndarray, parts: Iterable[tuple[str, list[str]]], *,
                 unit: str = "test items") -> ItemScores:
    """0/1 scores of a merged run's items (``unit``: what they are, e.g. ``"val items"``):
    ``parts`` are each dataset's name and sample ids, in the order the items were concatenated
    (the strata of the interval)."""
    parts = list(parts)
    ids = [f"{name}/{sample_id}" for name, sample_ids in parts for sample_id in sample_ids]
    return ItemScores.of(correct, ids, unit=unit, strata=[(name, len(s)) for name, s in parts])
