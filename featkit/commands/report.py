"""``featkit report``: result JSONs -> results.csv, report.md and the figures papers need."""

from __future__ import annotations

import argparse
from pathlib import Path

from featkit.commands.ci import add_ci
from featkit.commands.common import (
    non_negative_float,
    positive_int,
    split_list,
    unit_interval,
)

NAME = "report"
HELP = "collect result JSONs into results.csv, a Markdown report, rank statistics and figures"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"out": "dir"}
DESCRIPTION = (
    "Read every result record under RESULTS_DIR (files written with --json by retrieval, probe, "
    "perturb, ...) and write to --out: results.csv (one row per record and metric, values as in "
    "the JSON), report.md (system x dataset tables in percent), and PNG figures: grouped bars "
    "per metric, single vs merged probe (FG-BMK Fig. 8), original vs perturbed (Table 5), "
    "accuracy vs eps, Friedman + Nemenyi critical-difference diagrams across datasets (Figs "
    "6-7) and, with --shift REF:SHIFTED, effective robustness (probit or logit fit over the "
    "--baseline models). Figures whose statistic lacks inputs are skipped with a note."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS_DIR",
                        help="folder(s) searched recursively for result JSONs, or JSON files")
    parser.add_argument("--out", required=True, help="folder for results.csv, report.md and PNGs")
    parser.add_argument(
        "--metrics", default="headline",
        help="metrics charted and rank-tested: 'headline' (each task's headline metrics in the "
        "task registry, e.g. retrieval mAP and mAP@R, probe top1; default), 'all', or "
        "comma-separated names",
    )
    parser.add_argument(
        "--shift", action="append", default=[], metavar="REF:SHIFTED",
        help="effective robustness of SHIFTED vs REF datasets, e.g. imagenet:imagenet-r "
        "(repeatable)",
    )
    parser.add_argument("--baseline", default=None,
                        help="comma-separated models the robustness line is fitted on "
                        "(default: all models with both datasets)")
    parser.add_argument("--transform", default="probit", choices=["probit", "logit"],
                        help="axis transform of the robustness fit (default: probit)")
    parser.add_argument("--shift-metric", default="top1",
                        help="metric of the robustness fit (default: top1)")
    parser.add_argument("--shift-task", default=None,
                        help="task of the robustness fit (default: the task with both datasets "
                        "that the task registry ranks first: linear_probe, else knn, else "
                        "retrieval)")
    parser.add_argument("--alpha", type=unit_interval, default=0.05,
                        help="significance level of the Nemenyi test (default: 0.05)")
    parser.add_argument(
        "--perturb-eps", type=non_negative_float, default=None,
        help="budget of the original-vs-perturbed table, in each sweep's units (relative "
        "sweeps: fraction of the feature norm); default: each sweep's largest",
    )
    parser.add_argument("--dpi", type=positive_int, default=150, help="PNG resolution (default: 150)")
    add_ci(parser, unit="the test items of each record, for effective robustness (records with "
           "per-item scores)", default=0.95)


def run(args: argparse.Namespace) -> int:
    from featkit.errors import FeatkitError
    from featkit.reporting import report
    from featkit.reporting.robustness import interval_summary

    metrics = args.metrics if args.metrics in ("headline", "all") else split_list(args.metrics)
    if not metrics:
        raise FeatkitError(f"--metrics {args.metrics!r} names no metric; use headline, all or "
                           "comma-separated metric names")
    rep = report(
        args.results,
        metrics=metrics,
        shifts=args.shift,
        baseline=split_list(args.baseline) or None,
        transform=args.transform,
        shift_metric=args.shift_metric,
        shift_task=args.shift_task,
        alpha=args.alpha,
        perturb_eps=args.perturb_eps,
        ci=args.ci,
        ci_resamples=args.ci_resamples,
        ci_seed=args.ci_seed,
    )
    written = rep.write(args.out, dpi=args.dpi)
    out = Path(args.out)
    print(f"read {len(rep.sources)} result record(s): {rep.results['task'].nunique()} task(s), "
          f"{rep.results['system'].nunique()} system(s), {rep.results['dataset'].nunique()} "
          f"dataset(s)")
    for test in rep.statistics.values():
        print(test.summary())
    for fit in rep.robustness.values():
        print(fit.summary())
        if fit.intervals is not None:
            print(interval_summary(fit))
        for row in fit.points.itertuples(index=False):
            span = (f" [{row.er_low:+.2f}, {row.er_high:+.2f}]" if fit.intervals is not None
                    else "")
            print(f"  {row.system}: effective robustness {row.effective_robustness:+.2f}{span} "
                  f"points" + (" (baseline)" if row.baseline else ""))
    for note in rep.notes:
        print(f"note: {note}")
    figures = [name for name in written if name.endswith(".png")]
    print(f"figures written ({len(figures)}): {', '.join(figures) if figures else 'none'}")
    for name, reason in rep.skipped.items():
        print(f"skipped {name}: {reason}")
    for fig in rep.figures.values():
        fig.clf()
    print(f"wrote {out / 'results.csv'} and {out / 'report.md'}")
    return 0
