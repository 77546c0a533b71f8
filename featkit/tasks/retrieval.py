"""Retrieval task: exact full-ranking mAP of cached features (leave-one-out or vs a gallery).

Every metric is a mean over the scored queries, so the record keeps each one's per-query values
(``per_item``: AP, AP@R and R-precision as float32, P@1 and R@k as bits) and ``--ci`` gives each
an interval over queries. Only the queries are resampled; the gallery they are ranked against is
held fixed. In leave-one-out mode the gallery is the query split itself, so a resampled query is
still ranked against every other original item: the interval covers which queries were drawn, not
the gallery's sampling, and is narrower than one that redrew both. Each ``ci`` row's
``resampling`` says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores
from featkit.tasks.loading import FeatureSource, notes_of
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_choice
from probes.defaults import RETRIEVAL_MAX_MEMORY, RETRIEVAL_METRIC

METRICS = ("mAP", "mAP@R", "R-precision", "P@1", "R@1", "R@5", "R@10")
INFO = register(TaskInfo(
    name="retrieval", title="retrieval", headline=("mAP", "mAP@R"), columns=METRICS,
    module=__name__, shift_priority=2,
))


@dataclass(frozen=True)
class Settings:
    """``gallery_split`` None (or the query split): leave-one-out within the query split."""

    query_split: str = "test"
    gallery_split: str | None = None
    metric: str = RETRIEVAL_METRIC
    max_memory: str | int = RETRIEVAL_MAX_MEMORY
    ci: Interval | None = None

    def __post_init__(self) -> None:
        from probes._faiss import parse_memory

        check_choice(INFO.name, "--metric", self.metric, ("cosine", "euclidean"))
        try:
            parse_memory(self.max_memory)
        except FeatkitError as err:
            raise FeatkitError(f"{INFO.name}: --max-memory: {err}") from None

    @property
    def leave_one_out(self) -> bool:
        return self.gallery_split is None or self.gallery_split == self.query_split


def run(source: FeatureSource, dataset: str, settings: Settings | None = None, *,
        progress: bool = True) -> dict[str, Any]:
    """Load the cached splits, run :func:`probes.retrieval.retrieval_map` and return the
    record (task ``"retrieval"``)."""
    import numpy as np

    from featkit.results import make_result
    from probes.retrieval import TIE_RULE, TIE_RULE_TEXT, retrieval_map

    settings = settings or Settings()
    query = source.load(dataset, settings.query_split)
    gallery = None if settings.leave_one_out else source.load(dataset, settings.gallery_split)

    # Labels as class names, so splits whose files list classes differently still compare.
    def names(fs) -> np.ndarray:
        return np.asarray(fs.class_names, dtype=str)[fs.labels]

    result = retrieval_map(
        query.features, names(query),
        None if gallery is None else gallery.features,
        None if gallery is None else names(gallery),
        metric=settings.metric, max_memory=settings.max_memory, progress=progress,
    )
    provenance = dict(query.meta)
    if gallery is not None:
        provenance["gallery"] = dict(gallery.meta)
    scored_ids = [query.sample_ids[i] for i in result.scored]
    items = {metric: ItemScores.of(values, scored_ids, unit="queries")
             for metric, values in result.per_query().items()}
    extra: dict[str, Any] = {
        "counts": {"queries": result.n_queries, "excluded_queries": result.n_excluded,
                   "gallery": result.n_gallery},
        "per_class_ap": result.per_class_ap,
    }
    attach_item_scores(extra, items, settings.ci, result.metrics())
    if settings.ci is not None:
        for row in extra["ci"]["metrics"].values():
            row["resampling"] = resampling_text(settings.leave_one_out)
    return make_result(
        INFO.name, model=query.model or source.model, dataset=dataset, features=query.kind,
        metrics=result.metrics(),
        settings={
            "metric": settings.metric,
            "query_split": settings.query_split,
            "gallery_split": settings.query_split if settings.leave_one_out
            else settings.gallery_split,
            "mode": "leave-one-out" if settings.leave_one_out else "gallery",
            "tie_rule": TIE_RULE,
            "tie_rule_text": TIE_RULE_TEXT,
            "max_memory": settings.max_memory,
            "chunk_rows": result.chunk_rows,
            "device": result.device,
        },
        provenance=provenance,
        extra=extra,
        warnings=notes_of(query, gallery),
    )


def resampling_text(leave_one_out: bool) -> str:
    """What a retrieval interval resamples and holds fixed, as the record's ``ci`` rows say."""
    if leave_one_out:
        return ("queries; the gallery held fixed: in leave-one-out each resampled query is still "
                "ranked against all the other original items, so the interval covers the "
                "queries' sampling, not the gallery's")
    return "queries; the gallery split held fixed, so the interval covers the queries' sampling only"


def summary_line(record: dict[str, Any]) -> str:
    """One line saying what was ranked against what."""
    counts, s = record["counts"], record["settings"]
    against = (f"the rest of {s['query_split']} (leave-one-out)" if s["mode"] == "leave-one-out"
               else f"{counts['gallery']} {s['gallery_split']} items")
    excluded = (f"; {counts['excluded_queries']} queries without a relevant item excluded"
                if counts["excluded_queries"] else "")
    return (f"{record['model']} on {record['dataset']} ({record['features']}, {s['metric']}): "
            f"{counts['queries']} {s['query_split']} queries vs {against}{excluded}")
