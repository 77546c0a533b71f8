"""``featkit probe dg|attributes|taxonomy``: probes beyond the class label.

``dg``: domain-generalisation algorithms on frozen features with groups of class and attributes
(MEGACOIN); ``attributes``: attribute probes (CUB's binary attributes, a manifest's columns;
FG-BMK Table 2); ``taxonomy``: the linear probe at every level of a class hierarchy (FG-BMK
Fig. 2). ``featkit probe`` adds these subcommands with :func:`add_dg_arguments` and hands them
to :func:`run_dg`.
"""

from __future__ import annotations

import argparse
from typing import Any

from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    check_writable,
    device,
    emit,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    source_from,
    split_list,
)
from featkit.errors import FeatkitError

#: The ``featkit probe`` subcommands this module adds.
PROBES = ("dg", "attributes", "taxonomy")

DG_DESCRIPTION = (
    "Domain generalisation in the linear-probing setup (MEGACOIN): ERM, GroupDRO, V-REx, IRM, "
    "EQRM, CORAL and MMD train a linear head on the frozen features, full batch (Adam), for "
    "every seed; each algorithm's hyper-parameter is chosen on val (worst-group or average "
    "accuracy, --selection) and the chosen network is scored once on test: mean and std over "
    "seeds of average, worst-group and per-group accuracy. Groups are the value combinations of "
    "--group-by (e.g. class,bgd); V-REx, IRM, EQRM, CORAL and MMD compare the domains of "
    "--domain-by (default: the attributes of --group-by). CORAL and MMD match the "
    "representation the head reads, which is fixed on frozen features: without --adapter-dim "
    "their penalty has no gradient and they train as domain-averaged ERM (the record says so). "
    "Attributes come from the dataset (a manifest's header columns, CUB's attribute groups), "
    "matched to the cached rows by sample id."
)
ATTRIBUTES_DESCRIPTION = (
    "Attribute probes. A CUB tree with attributes/image_attribute_labels.txt gets one "
    "multi-label probe per attribute group (e.g. the 15 wing colours; L-BFGS, L2 strength "
    "chosen on val per group): macro-AUROC and mAP over attributes, per-attribute accuracy, "
    "per-group top-1. Other datasets' categorical attributes (a manifest's header columns) get "
    "one linear probe each, the attribute's values as classes."
)
TAXONOMY_DESCRIPTION = (
    "The linear probe (C swept on val, refit, one test score) at every level of a class "
    "hierarchy: --hierarchy is a CSV whose header names the levels from fine to coarse "
    "(species,genus,family,order) with one line per class; each level relabels the classes to "
    "its names. --plot draws accuracy against level. --ci LEVEL adds percentile bootstrap "
    "intervals of every level's top-1 over the test images."
)


def _grid(text: str) -> tuple[str, tuple[float, ...]]:
    """argparse ``type`` of ``--grid ALG=v1,v2``."""
    name, sep, values = text.partition("=")
    try:
        numbers = tuple(float(v) for v in split_list(values))
    except ValueError:
        numbers = ()
    if not sep or not name.strip() or not numbers:
        raise argparse.ArgumentTypeError(f"{text!r} is not ALGORITHM=value,value,...")
    return name.strip(), numbers


def _holdout(text: str) -> tuple[str, tuple[str, ...]]:
    """argparse ``type`` of ``--holdout ATTR=v1,v2``."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not split_list(values):
        raise argparse.ArgumentTypeError(f"{text!r} is not ATTRIBUTE=value,value,...")
    return name.strip(), tuple(split_list(values))


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_model_dataset(parser, data_root=True)
    add_features(parser)
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda, cuda:N or auto (default: cuda if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    add_outputs(parser)


def add_dg_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dg``, ``attributes`` and ``taxonomy`` subcommands to ``featkit probe``."""
    from featkit.commands.ci import add_ci
    from featkit.tasks import attributes, dg, linear

    d, a, lin = dg.Settings, attributes.Settings, linear.Settings
    p = subparsers.add_parser("dg", help="DG algorithms with groups of class and attributes "
                              "(worst-group accuracy over seeds)", description=DG_DESCRIPTION)
    _add_common(p)
    p.add_argument("--group-by", required=True,
                   help="comma-separated keys whose value combinations are the groups: class "
                   "and attribute names, e.g. class,bgd")
    p.add_argument("--domain-by", default=None,
                   help="keys of the domains V-REx, IRM, EQRM, CORAL and MMD compare (default: "
                   "the attributes of --group-by)")
    p.add_argument("--eval-group-by", default=None,
                   help="keys of the groups test accuracy is reported over (default: "
                   "--group-by), e.g. trained on class,fgd and evaluated on class,bgd")
    p.add_argument("--algorithms", default=",".join(d.algorithms),
                   help=f"comma-separated algorithms (default: {','.join(d.algorithms)})")
    p.add_argument("--seeds", type=positive_int, default=d.seeds,
                   help=f"runs per algorithm, seeds 0..n-1 (default: {d.seeds})")
    p.add_argument("--selection", default=d.selection, choices=["worst_group", "average"],
                   help=f"val accuracy that chooses each hyper-parameter (default: {d.selection})")
    p.add_argument("--grid", type=_grid, action="append", default=[],
                   help="ALGORITHM=v1,v2,... replaces that algorithm's grid (groupdro eta, vrex "
                   "and irm lambda, eqrm quantile, coral and mmd gamma); repeat for several")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help=f"full-batch Adam steps (default: {d.steps})")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=f"Adam learning rate (default: {d.lr})")
    p.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay,
                   help=f"Adam weight decay (default: {d.weight_decay})")
    p.add_argument("--burnin", type=non_negative_int, default=d.burnin,
                   help=f"steps before the IRM / V-REx / EQRM penalty (default: {d.burnin})")
    p.add_argument("--adapter-dim", type=positive_int, default=d.adapter_dim,
                   help="train a linear + ReLU adapter of this width under the head for every "
                   "algorithm (gives CORAL and MMD a representation to match; default: none)")
    p.add_argument("--mmd-max-rows", type=positive_int, default=d.mmd_max_rows,
                   help=f"rows per domain in MMD's kernel at each step (default: {d.mmd_max_rows})")
    p.add_argument("--normalization", default=d.normalization,
                   choices=["l2", "standardize", "none"],
                   help=f"feature normalisation (default: {d.normalization})")
    p.add_argument("--no-resplit", action="store_true",
                   help="keep the cached train / val splits for every seed (default: each seed "
                   "redraws them from their union, stratified by group)")
    p.add_argument("--holdout", type=_holdout, default=None,
                   help="ATTR=v1,v2: train and choose without those values, test only on them "
                   "(attribute generalisation)")
    p.add_argument("--attr-map", default=None,
                   help='JSON merging attribute values, {"pink": "red"} or {"fgd": {...}}')
    p.add_argument("--save-predictions", default=None,
                   help="write the test predictions of every algorithm and seed (.npz)")
    add_ci(p, unit="test items, the seeds' networks fixed (worst group: within each group, "
           "recomputed)")

    p = subparsers.add_parser("attributes", help="attribute probes (CUB multi-label, manifest "
                              "columns)", description=ATTRIBUTES_DESCRIPTION)
    _add_common(p)
    p.add_argument("--attributes", default=None,
                   help="comma-separated CUB attribute groups (has_wing_color) or attribute "
                   "names (default: all)")
    p.add_argument("--min-certainty", type=positive_int, default=a.min_certainty,
                   help="CUB: leave out labels with a lower certainty id (1 not visible, 2 "
                   f"guessing, 3 probably, 4 definitely; default: {a.min_certainty})")
    p.add_argument("--l2-grid", default=",".join(f"{v:g}" for v in a.l2_grid),
                   help="CUB: L2 strengths swept per group (default: "
                   f"{','.join(f'{v:g}' for v in a.l2_grid)})")
    p.add_argument("--max-iter", type=positive_int, default=a.max_iter,
                   help=f"CUB: L-BFGS iterations per strength (default: {a.max_iter})")
    p.add_argument("--normalization", default=a.normalization,
                   choices=["l2", "standardize", "none"],
                   help=f"feature normalisation (default: {a.normalization})")
    p.add_argument("--c-grid", default=None,
                   help="categorical attributes: the linear probe's C values (default: its grid)")
    p.add_argument("--attr-map", default=None, help="JSON merging attribute values")
    add_ci(p, unit="test images (macro-AUROC, mAP and mean top-1: recomputed)")

    p = subparsers.add_parser("taxonomy", help="linear probe at every level of a class "
                              "hierarchy", description=TAXONOMY_DESCRIPTION)
    _add_common(p)
    p.add_argument("--hierarchy", required=True,
                   help="CSV: header of levels fine to coarse, one line per class")
    p.add_argument("--levels", default=None, help="comma-separated levels (default: all)")
    p.add_argument("--normalization", default=lin.normalization,
                   choices=["l2", "standardize", "none"],
                   help=f"feature normalisation (default: {lin.normalization})")
    p.add_argument("--c-grid", default=None,
                   help="comma-separated C values (default: the linear probe's grid)")
    p.add_argument("--max-iter", type=positive_int, default=lin.max_iter,
                   help=f"L-BFGS iterations per C (default: {lin.max_iter})")
    p.add_argument("--plot", default=None, help="write accuracy against level (PNG) here")
    add_ci(p)


def _numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in split_list(text))
    except ValueError:
        raise FeatkitError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _pm(stats: dict[str, float]) -> str:
    return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def _chosen(values: list[Any]) -> str:
    """``0.01 x7, 0.1 x3``: the chosen grid values and how many seeds chose each."""
    if all(v is None for v in values):
        return "-"
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{v:g} x{n}" for v, n in sorted(counts.items()))


def dg_table(record: dict[str, Any]) -> str:
    """The readable summary of a ``dg`` record."""
    from featkit.results import format_table, warnings_text
    from featkit.tasks.intervals import interval_lines

    settings = record["settings"]
    groups = record["groups"]
    lines = [
        f"{record['model']} on {record['dataset']} ({record['features']}), dg: groups "
        f"{','.join(settings['group_by'])} ({len(groups['evaluated'])} tested), domains "
        f"{','.join(settings['domain_by']) or '-'}; {len(settings['seeds'])} seeds, "
        f"{settings['selection']}",
        format_table([
            {"algorithm": name, "parameter": summary["parameter"] or "-",
             "chosen": _chosen(summary["chosen"]), "average (%)": _pm(summary["average"]),
             "worst group (%)": _pm(summary["worst_group"])}
            for name, summary in record["algorithms"].items()
        ]),
    ]
    return "\n".join(lines) + interval_lines(record) + warnings_text(record)


def attributes_table(record: dict[str, Any]) -> str:
    """The readable summary of an ``attributes`` record."""
    from featkit.results import format_table, metrics_table
    from featkit.tasks.intervals import interval_lines

    head = f"{record['model']} on {record['dataset']} ({record['features']}), attributes"
    if record["settings"]["mode"] == "binary":
        rows = [{"group": g, "L2": f"{v['l2']:g}", "top1": v["top1"],
                 "macro AUROC": v["macro_auroc"], "mAP": v["map"], "images": v["images"]}
                for g, v in record["per_group"].items()]
    else:
        rows = [{"attribute": name, "values": len(v["values"]), "C": f"{v['C']:.3g}",
                 "top1": v["top1"], "mean per class": v["mean_per_class"]}
                for name, v in record["per_attribute"].items()]
    return "\n".join([head, format_table(rows), metrics_table(record)]) + interval_lines(record)


def taxonomy_table(record: dict[str, Any]) -> str:
    """The readable summary of a ``taxonomy`` record, with the intervals of --ci."""
    from featkit.results import format_table, warnings_text
    from featkit.tasks.intervals import interval_lines

    rows = [{"level": r["level"], "classes": r["classes"], "C": f"{r['C']:.3g}",
             "top1": r["top1"], "top5": r["top5"], "mean per class": r["mean_per_class"]}
            for r in record["levels"]]
    return "\n".join([f"{record['model']} on {record['dataset']} ({record['features']}), "
                      f"linear probe by taxonomy level ({record['settings']['hierarchy']})",
                      format_table(rows)]) + interval_lines(record) + warnings_text(record)


def _emit_all(records: list[dict[str, Any]], table, json_path: str | None) -> None:
    if len(records) == 1:
        emit(records[0], table(records[0]), json_path)
        return
    from featkit.results import write_result

    print("\n\n".join(table(r) for r in records))
    if json_path:
        write_result(records, json_path)


def run_dg(args: argparse.Namespace) -> int:
    """Run ``featkit probe dg|attributes|taxonomy``."""
    from featkit.commands.ci import interval_from
    from featkit.tasks import attributes, dg, linear, taxonomy

    source, progress = source_from(args), not args.no_progress
    if args.probe == "dg":
        if args.save_predictions:
            check_writable(args.save_predictions, "--save-predictions")
        settings = dg.Settings(
            group_by=tuple(split_list(args.group_by)),
            domain_by=tuple(split_list(args.domain_by)) if args.domain_by else None,
            eval_group_by=tuple(split_list(args.eval_group_by)) if args.eval_group_by else None,
            algorithms=tuple(split_list(args.algorithms)), seeds=args.seeds,
            selection=args.selection, steps=args.steps, lr=args.lr,
            weight_decay=args.weight_decay, burnin=args.burnin, adapter_dim=args.adapter_dim,
            mmd_max_rows=args.mmd_max_rows, normalization=args.normalization,
            resplit=not args.no_resplit, grids=tuple(args.grid), holdout=args.holdout,
            attr_map=args.attr_map, device=args.device, ci=interval_from(args),
        )
        records = dg.run(source, args.dataset, settings, save_predictions=args.save_predictions,
                         progress=progress)
        _emit_all(records, dg_table, args.json)
        for record in records:
            if "predictions_file" in record:
                print(f"saved predictions {record['predictions_file']}")
        return 0
    if args.probe == "attributes":
        settings = attributes.Settings(
            attributes=tuple(split_list(args.attributes)), min_certainty=args.min_certainty,
            l2_grid=_numbers(args.l2_grid, "--l2-grid"), max_iter=args.max_iter,
            normalization=args.normalization, c_grid=_numbers(args.c_grid, "--c-grid"),
            attr_map=args.attr_map, device=args.device, ci=interval_from(args),
        )
        _emit_all(attributes.run(source, args.dataset, settings, progress=progress),
                  attributes_table, args.json)
        return 0
    if args.plot:
        check_writable(args.plot, "--plot")
    probe = linear.Settings(normalization=args.normalization,
                            c_grid=_numbers(args.c_grid, "--c-grid"), max_iter=args.max_iter,
                            device=args.device)
    settings = taxonomy.Settings(hierarchy=args.hierarchy,
                                 levels=tuple(split_list(args.levels)), probe=probe,
                                 ci=interval_from(args))
    records = taxonomy.run(source, split_list(args.dataset), settings, progress=progress)
    _emit_all(records, taxonomy_table, args.json)
    if args.plot:
        _plot_levels(records, args.plot)
    return 0


def _plot_levels(records: list[dict[str, Any]], path: str) -> None:
    import pandas as pd

    from featkit.plots import accuracy_by_level

    rows = [{"system": f"{r['model']} ({r['features']})", "dataset": r["dataset"],
             "level": level["level"], "top1": level["top1"]}
            for r in records for level in r["levels"]]
    accuracy_by_level(pd.DataFrame(rows)).savefig(path, bbox_inches="tight")
    print(f"wrote {path}")
