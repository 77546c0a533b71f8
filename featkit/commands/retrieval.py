"""``featkit retrieval``: exact full-ranking retrieval mAP of cached features."""

from __future__ import annotations

import argparse
import os
from typing import Any

from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    emit,
)

NAME = "retrieval"
HELP = "retrieval mAP, mAP@R, R-precision, P@1, R@k of cached features (leave-one-out or vs a gallery split)"
DESCRIPTION = (
    "Rank the whole gallery for every query by cosine (or euclidean) similarity and score the "
    "ranking: mAP over the full ranking, mAP@R, R-precision, P@1 and R@1/5/10. With no "
    "--gallery-split (or the query split again) it is leave-one-out within the query split, each "
    "query removed by index. Ties: a relevant item tied with irrelevant ones ranks after them."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_dataset(parser)
    add_features(parser)
    parser.add_argument("--query-split", default="test", help="split whose images are the queries (default: test)")
    parser.add_argument(
        "--gallery-split",
        default=None,
        help="split searched, e.g. train (default: the query split, leave-one-out)",
    )
    parser.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"], help="similarity (default: cosine)")
    parser.add_argument("--max-memory", default="2GB", help="working-memory budget, e.g. 2GB or 500MB (default: 2GB)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cache_dir(parser)
    add_outputs(parser)


def retrieval_record(
    model: str,
    dataset: str,
    *,
    features: str = "visual",
    query_split: str = "test",
    gallery_split: str | None = None,
    metric: str = "cosine",
    max_memory: str | int = "2GB",
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    adapter: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load the cached splits, run :func:`probes.retrieval.retrieval_map` and build the result
    record (``featkit.results.make_result`` shape, task ``"retrieval"``)."""
    import numpy as np

    import featkit
    from featkit.results import make_result
    from probes.retrieval import TIE_RULE, TIE_RULE_TEXT, retrieval_map

    def load(split: str):
        return featkit.load(model, dataset, split, features, cache_dir=cache_dir, weights=weights, adapter=adapter)

    leave_one_out = gallery_split is None or gallery_split == query_split
    query = load(query_split)
    gallery = None if leave_one_out else load(gallery_split)

    # Labels as class names, so splits whose files list classes differently still compare.
    def names(fs) -> np.ndarray:
        return np.asarray(fs.class_names, dtype=str)[fs.labels]

    result = retrieval_map(
        query.features,
        names(query),
        None if gallery is None else gallery.features,
        None if gallery is None else names(gallery),
        metric=metric,
        max_memory=max_memory,
        progress=progress,
    )
    provenance = dict(query.meta)
    if gallery is not None:
        provenance["gallery"] = dict(gallery.meta)
    return make_result(
        "retrieval",
        model=query.model or model,
        dataset=dataset,
        features=query.kind,
        metrics=result.metrics(),
        settings={
            "metric": metric,
            "query_split": query_split,
            "gallery_split": query_split if leave_one_out else gallery_split,
            "mode": "leave-one-out" if leave_one_out else "gallery",
            "tie_rule": TIE_RULE,
            "tie_rule_text": TIE_RULE_TEXT,
            "max_memory": max_memory,
            "chunk_rows": result.chunk_rows,
            "device": result.device,
        },
        provenance=provenance,
        extra={
            "counts": {
                "queries": result.n_queries,
                "excluded_queries": result.n_excluded,
                "gallery": result.n_gallery,
            },
            "per_class_ap": result.per_class_ap,
        },
    )


def run(args: argparse.Namespace) -> int:
    from featkit.results import metrics_table

    record = retrieval_record(
        args.model,
        args.dataset,
        features=args.features,
        query_split=args.query_split,
        gallery_split=args.gallery_split,
        metric=args.metric,
        max_memory=args.max_memory,
        cache_dir=args.cache_dir,
        weights=args.weights,
        adapter=args.adapter,
        progress=not args.no_progress,
    )
    counts = record["counts"]
    settings = record["settings"]
    print(
        f"{record['model']} on {record['dataset']} ({record['features']}, {settings['metric']}): "
        f"{counts['queries']} {settings['query_split']} queries vs "
        + (f"the rest of {settings['query_split']} (leave-one-out)" if settings["mode"] == "leave-one-out" else f"{counts['gallery']} {settings['gallery_split']} items")
        + (f"; {counts['excluded_queries']} queries without a relevant item excluded" if counts["excluded_queries"] else "")
    )
    emit(record, metrics_table(record), args.json)
    return 0
