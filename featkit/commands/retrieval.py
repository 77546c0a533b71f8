"""``featkit retrieval``: exact full-ranking retrieval mAP of cached features."""

from __future__ import annotations

import argparse

from featkit.commands.ci import add_ci, interval_from
from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    emit,
    source_from,
)
from featkit.errors import FeatkitError

NAME = "retrieval"
HELP = "retrieval mAP, mAP@R, R-precision, P@1, R@k of cached features (leave-one-out or vs a gallery split)"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file"}
DESCRIPTION = (
    "Rank the whole gallery for every query by cosine (or euclidean) similarity and score the "
    "ranking: mAP over the full ranking, mAP@R, R-precision, P@1 and R@1/5/10. With no "
    "--gallery-split (or the query split again) it is leave-one-out within the query split, each "
    "query removed by index. Ties: a relevant item tied with irrelevant ones ranks after them."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.tasks.retrieval import Settings

    add_model_dataset(parser, data_root=True)
    add_features(parser)
    parser.add_argument("--query-split", default=Settings.query_split,
                        help=f"split whose images are the queries (default: {Settings.query_split})")
    parser.add_argument(
        "--gallery-split",
        default=Settings.gallery_split,
        help="split searched, e.g. train (default: the query split, leave-one-out)",
    )
    parser.add_argument("--metric", default=Settings.metric, choices=["cosine", "euclidean"],
                        help=f"similarity (default: {Settings.metric})")
    parser.add_argument("--max-memory", default=Settings.max_memory,
                        help=f"working-memory budget, e.g. 2GB or 500MB (default: {Settings.max_memory})")
    add_protocol(parser, "retrieval")
    add_ci(parser, unit="queries")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cache_dir(parser)
    add_outputs(parser)


def add_protocol(parser: argparse.ArgumentParser, what: str) -> None:
    """``--protocol standard|fgbmk`` and the FG-BMK protocol's ``--fgbmk KEY=VALUE`` settings."""
    parser.add_argument(
        "--protocol", default="standard", choices=["standard", "fgbmk"],
        help=f"standard (default) or fgbmk: what FG-BMK's released code computes for {what} "
        "(its head grid, selection on test; the record lists every departure), for comparison "
        "with its published figures",
    )
    parser.add_argument(
        "--fgbmk", action="append", default=[], metavar="KEY=VALUE",
        help="a setting of --protocol fgbmk, e.g. iterations=2000, patch_kind=patch_mean, "
        "learning_rates=1e-3,5e-3 (repeatable; FG-BMK's values by default)",
    )


def run_fgbmk(args: argparse.Namespace, module, dataset: str) -> tuple[dict, str]:
    """One dataset under ``--protocol fgbmk``: the record of the FG-BMK task ``module`` and
    its readable summary."""
    from featkit.tasks.fgbmk.common import parse_pairs, summary_table
    from featkit.tasks.settings import settings_from

    values = parse_pairs(args.fgbmk)
    if vars(args).get("device") is not None:
        values.setdefault("device", args.device)
    settings = settings_from(module.Settings, values, task=module.INFO.name)
    record = module.run(source_from(args), dataset, settings, progress=not args.no_progress)
    return record, summary_table(record)


def refuse_fgbmk_ci(args: argparse.Namespace, task: str) -> None:
    """``--ci`` with ``--protocol fgbmk``: a one-line refusal (FG-BMK's scores keep no per-item
    scores to resample)."""
    from featkit.tasks.intervals import refuse_interval

    if args.ci is not None:
        raise refuse_interval(task, "FG-BMK's protocol keeps no per-item scores to resample; "
                              "use --protocol standard")


def run(args: argparse.Namespace) -> int:
    from featkit.results import metrics_table
    from featkit.tasks import retrieval
    from featkit.tasks.intervals import interval_lines

    if args.protocol == "fgbmk":
        from featkit.tasks.fgbmk import retrieval as fgbmk_retrieval

        refuse_fgbmk_ci(args, fgbmk_retrieval.INFO.name)
        emit(*run_fgbmk(args, fgbmk_retrieval, args.dataset), args.json)
        return 0
    if args.fgbmk:
        raise FeatkitError("--fgbmk settings apply to --protocol fgbmk")
    settings = retrieval.Settings(query_split=args.query_split, gallery_split=args.gallery_split,
                                  metric=args.metric, max_memory=args.max_memory,
                                  ci=interval_from(args))
    record = retrieval.run(source_from(args), args.dataset, settings,
                           progress=not args.no_progress)
    print(retrieval.summary_line(record))
    emit(record, metrics_table(record) + interval_lines(record), args.json)
    return 0
