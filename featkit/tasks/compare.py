"""Two models on the same items: a paired bootstrap interval and p-value of their difference,
and McNemar's test when the metric is an accuracy (0/1 per item).

The inputs are result records (``featkit ... --json``): their ``per_item`` scores
(:mod:`featkit.tasks.intervals`) are compared item by item, after checking that both records
scored the same items in the same order (equal sample-id digests). Files holding several records
(one per dataset, or per shifted set) are paired by task and dataset.

Metrics that are no mean of per-item scores (a record's ``recomputed_metrics``: ROC-AUC, TAR at
FAR, worst-group accuracy, macro-AUROC, ...) are refused in one line: their paired comparison
would recompute the statistic of both systems on the same resampled items, which needs the
items' raw scores, and records do not keep them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, read_per_item, recomputed_metrics

if TYPE_CHECKING:
    from probes.bootstrap import McNemarResult, PairedComparison

#: How the comparison is written to JSON (not a result record: ``featkit report`` skips it).
KIND = "paired comparison"


@dataclass(frozen=True)
class Comparison:
    """A minus B on one metric of one (task, dataset): the paired bootstrap of the mean
    difference, and McNemar's exact test for 0/1 scores (None otherwise)."""

    task: str
    dataset: str
    metric: str
    model_a: str
    model_b: str
    unit: str
    paired: PairedComparison
    mcnemar: McNemarResult | None = None
    note: str = ""

    def row(self) -> dict[str, Any]:
        """The JSON entry (fractions; the difference is A - B)."""
        p = self.paired
        row: dict[str, Any] = {
            "kind": KIND, "task": self.task, "dataset": self.dataset, "metric": self.metric,
            "a": self.model_a, "b": self.model_b, "n": p.n, "unit": self.unit,
            "a_value": p.mean_a, "b_value": p.mean_b, "difference": p.difference,
            "ci": {"level": p.level, "low": p.low, "high": p.high,
                   "method": "paired percentile bootstrap", "resamples": p.resamples,
                   "seed": p.seed},
            "bootstrap_pvalue": p.pvalue,
        }
        if self.note:
            row["note"] = self.note
        if self.mcnemar is not None:
            m = self.mcnemar
            row["mcnemar"] = {"only_a_correct": m.only_a, "only_b_correct": m.only_b,
                              "statistic": m.statistic, "pvalue": m.pvalue,
                              "test": "exact binomial" if m.exact else "chi-square, corrected"}
        return row


def _records(data: Any, where: str) -> list[Mapping[str, Any]]:
    items = data if isinstance(data, list) else [data]
    records = [r for r in items if isinstance(r, Mapping) and "metrics" in r and "task" in r]
    if not records:
        raise FeatkitError(f"{where} holds no result record")
    return records


def pair_records(a: Any, b: Any, *, names: tuple[str, str] = ("A", "B")
                 ) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Records of A and B with the same (task, dataset); one record on each side always
    pairs. Unpaired keys are an error naming them."""
    left, right = _records(a, names[0]), _records(b, names[1])
    if len(left) == 1 and len(right) == 1:
        return [(left[0], right[0])]
    keyed = {(r["task"], r["dataset"]): r for r in right}
    pairs = [(r, keyed[(r["task"], r["dataset"])]) for r in left
             if (r["task"], r["dataset"]) in keyed]
    if not pairs:
        raise FeatkitError(f"{names[0]} and {names[1]} share no (task, dataset): "
                           f"{sorted({(r['task'], r['dataset']) for r in left})} vs "
                           f"{sorted(keyed)}")
    return pairs


def default_metric(record: Mapping[str, Any]) -> str:
    """The task's first headline metric that has per-item scores, else the first one stored."""
    from featkit.tasks.registry import tasks

    stored = list(record.get("per_item") or {})
    info = tasks().get(str(record.get("task")))
    for metric in (info.headline if info is not None else ()):
        if metric in stored:
            return metric
    if not stored:
        recomputed = recomputed_metrics(record)
        if recomputed:
            raise _refuse_recomputed(record, next(iter(recomputed)))
        read_per_item(record, "top1")  # the one-line "no per-item scores" error
    return stored[0]


def _refuse_recomputed(record: Mapping[str, Any], metric: str) -> FeatkitError:
    stored = ", ".join(record.get("per_item") or {}) or "none"
    return FeatkitError(
        f"{metric} of the {record.get('task')} record is no mean over items (its interval "
        f"recomputes it on resampled items), and a paired comparison of it is not implemented: "
        f"the record keeps no raw scores; compare a per-item metric (stored: {stored})")


def compare_records(a: Mapping[str, Any], b: Mapping[str, Any], metric: str | None = None,
                    interval: Interval | None = None) -> Comparison:
    """Compare two records on ``metric`` (default :func:`default_metric` of A) over the
    items both scored."""
    from probes.bootstrap import mcnemar, paired_bootstrap

    interval = interval or Interval()
    note = ""
    if metric is None:
        metric = default_metric(a)
        headline = _headline(a)
        if headline is not None and headline != metric:
            note = (f"the headline {headline} is recomputed per resample (no paired test); "
                    f"compared {metric}, the first per-item metric (--metric chooses another)")
    if a.get("task") != b.get("task"):
        raise FeatkitError(f"A is a {a.get('task')} record and B a {b.get('task')} record; "
                           f"compare records of the same task")
    for record in (a, b):
        if metric in recomputed_metrics(record):
            raise _refuse_recomputed(record, metric)
    left, right = read_per_item(a, metric), read_per_item(b, metric)
    if left.n != right.n or left.ids_sha256 != right.ids_sha256:
        raise FeatkitError(
            f"{metric}: A and B scored different items ({left.n} vs {right.n} {left.unit}, "
            f"sample-id digests {left.ids_sha256[:12]} vs {right.ids_sha256[:12]}); a paired "
            f"test needs the same items in the same order")
    paired = paired_bootstrap(left.values, right.values, level=interval.level,
                              resamples=interval.resamples, seed=interval.seed)
    exact = mcnemar(left.values, right.values) if left.binary and right.binary else None
    return Comparison(str(a["task"]), str(a["dataset"]), metric, str(a["model"]),
                      str(b["model"]), left.unit, paired, exact, note)


def _headline(record: Mapping[str, Any]) -> str | None:
    """The task's first headline metric, when the record is of a registered task."""
    from featkit.tasks.registry import tasks

    info = tasks().get(str(record.get("task")))
    return info.headline[0] if info is not None and info.headline else None


def compare(a: Any, b: Any, metric: str | None = None, interval: Interval | None = None,
            *, names: tuple[str, str] = ("A", "B")) -> list[Comparison]:
    """:func:`compare_records` for every (task, dataset) pair of A's and B's records."""
    return [compare_records(x, y, metric, interval) for x, y in pair_records(a, b, names=names)]


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    """One row per comparison: values, difference with its interval, the p-values."""
    from featkit.results import format_table

    rows = []
    for c in comparisons:
        p = c.paired
        rows.append({
            "dataset": c.dataset, "metric": c.metric, "n": p.n, "A": p.mean_a, "B": p.mean_b,
            "A - B (points)": f"{100 * p.difference:+.2f}",
            f"{100 * p.level:g}% CI": f"[{100 * p.low:+.2f}, {100 * p.high:+.2f}]",
            "bootstrap p": f"{p.pvalue:.4g}",
            "McNemar p": "" if c.mcnemar is None else f"{c.mcnemar.pvalue:.4g}",
        })
    return format_table(rows)
