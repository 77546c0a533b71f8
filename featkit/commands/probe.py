"""``featkit probe linear|knn``: classification probes of cached features.

``linear``: multinomial logistic regression (L-BFGS), C swept on the val split, refit, one score
on test. ``knn``: DINOv2's weighted k-NN (cosine, exp(sim / 0.07) votes). ``--merge`` trains one
probe on several datasets at once (namespaced classes) and reports each dataset's drop against
its own single-dataset probe (FG-BMK Fig. 8).
"""

from __future__ import annotations

import argparse
from typing import Any

from featkit.commands.ci import add_ci, interval_from
from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    device,
    emit,
    non_negative_int,
    positive_float,
    positive_int,
    source_from,
    split_list,
)
from featkit.commands.probe_dg import PROBES, add_dg_arguments, run_dg
from featkit.commands.retrieval import add_protocol, refuse_fgbmk_ci, run_fgbmk
from featkit.errors import FeatkitError

NAME = "probe"
HELP = "linear-probe (logistic regression) or kNN top-1/top-5 of cached features"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file", "save_probe": "file"}
DESCRIPTION = (
    "Classification probes of cached features. 'linear': multinomial logistic regression by "
    "L-BFGS; the L2 strength C is swept on the val split (ties -> stronger regularisation), the "
    "best C is refit on train + val and scored once on test. 'knn': weighted k-NN as in "
    "DINOv2 (cosine similarity, votes exp(sim / T)). --dataset a,b,c --merge trains one probe "
    "on the union of the datasets (classes named 'dataset/class') and reports each dataset's "
    "top-1 next to its single-dataset probe; without --merge each dataset is probed on its own "
    "and --json holds a list of records."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.tasks import knn, linear

    lin, kn = linear.Settings, knn.Settings
    probes = parser.add_subparsers(dest="probe", metavar="PROBE", required=True)
    parser_linear = probes.add_parser(
        "linear", help="logistic-regression probe with a validation sweep over C",
        description=DESCRIPTION,
    )
    _add_common(parser_linear)
    parser_linear.add_argument(
        "--normalization", default=lin.normalization, choices=["l2", "standardize", "none"],
        help=f"feature normalisation before the probe (default: {lin.normalization}; "
        "standardize uses train mean/std)",
    )
    parser_linear.add_argument(
        "--c-grid", default=None,
        help="comma-separated C values (scikit-learn's inverse L2 strength; default: 15 values "
        "10^-2..10^5 for unit-norm features, rescaled by the mean squared norm otherwise)",
    )
    parser_linear.add_argument(
        "--no-refit-on-val", action="store_true",
        help="keep the train-only fit at the chosen C instead of refitting on train + val",
    )
    parser_linear.add_argument("--tol", type=positive_float, default=lin.tol,
                               help=f"L-BFGS gradient tolerance (scikit-learn's tol; default: "
                               f"{lin.tol:g})")
    parser_linear.add_argument("--max-iter", type=positive_int, default=lin.max_iter,
                               help=f"L-BFGS iterations per C (default: {lin.max_iter})")
    parser_linear.add_argument("--seed", type=non_negative_int, default=lin.seed,
                               help="seed recorded with the result; the fit itself has no "
                               f"randomness (default: {lin.seed})")
    add_protocol(parser_linear, "the linear probe")
    parser_linear.add_argument(
        "--save-probe", default=None,
        help="write the trained probe (.npz or .pt) here (default: next to --json as "
        "<name>.probe.npz, else <cache>/_probes/<model>/<datasets>-<features>.npz)",
    )
    parser_knn = probes.add_parser(
        "knn", help="weighted k-NN probe (DINOv2 protocol)", description=DESCRIPTION
    )
    _add_common(parser_knn)
    parser_knn.add_argument("--k", default=",".join(map(str, kn.ks)),
                            help=f"comma-separated k values (default: {','.join(map(str, kn.ks))})")
    parser_knn.add_argument("--primary-k", type=positive_int, default=kn.primary_k,
                            help="k reported as top1/top5 (default: 20 if given, else the largest)")
    parser_knn.add_argument("--temperature", type=positive_float, default=kn.temperature,
                            help=f"vote temperature T in exp(sim / T) (default: {kn.temperature})")
    parser_knn.add_argument(
        "--train-only", action="store_true",
        help="neighbours from the train split only (default: train + val, i.e. all "
        "training data, since kNN tunes nothing)",
    )
    add_dg_arguments(probes)


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_model_dataset(parser, multi_dataset=True, data_root=True)
    add_features(parser)
    parser.add_argument(
        "--merge", action="store_true",
        help="train one probe on the union of the listed datasets (needs two or more)",
    )
    parser.add_argument(
        "--label-map", default=None,
        help='JSON file {"old class": "existing class", ...} merging classes of one dataset',
    )
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda, cuda:N or auto (default: cuda if present)")
    parser.add_argument(
        "--layers", default=None,
        help="probe --features (a per-layer kind: cls, patch_mean or last_token) at each layer: "
        "'all' or block numbers, e.g. --layers=-1,-2,12; one accuracy-vs-depth curve per model "
        "(extract the layers first with 'featkit extract --layers')",
    )
    add_ci(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    add_outputs(parser)


def probe_table(record: dict[str, Any]) -> str:
    """The readable summary of a probe record: sweep, metrics, the merged comparison and the
    intervals of --ci."""
    from featkit.results import format_table, metrics_table
    from featkit.tasks.intervals import interval_lines

    settings = record["settings"]
    lines = [f"{record['model']} on {record['dataset']} ({record['features']}), {record['task']}"]
    if record["task"] == "linear_probe":
        lines.append(
            f"chosen C = {settings['C']:.4g} (normalisation {settings['normalization']}, "
            f"refit on {'train + val' if settings['refit_on_val'] else 'train'})"
        )
        lines.append(format_table(
            [{"C": f"{p['C']:.3g}", "val top1": p["val_top1"]} for p in record["sweep"]]
        ))
    else:
        lines.append(f"k = {settings['ks']} (primary {settings['primary_k']}), "
                     f"T = {settings['temperature']}, neighbours from {settings['bank']}")
    lines.append(metrics_table(record))
    if "per_dataset" in record:
        rows = [
            {"dataset": name, "single top1": row["single"], "merged top1": row["merged"],
             "drop (points)": f"{100 * row['drop']:+.2f}"}
            for name, row in record["per_dataset"].items()
        ]
        rows.append({"dataset": "mean", "drop (points)": f"{100 * record['mean_drop']:+.2f}"})
        lines.append(format_table(rows))
    return "\n".join(lines) + interval_lines(record)


def run(args: argparse.Namespace) -> int:
    if args.probe in PROBES:
        return run_dg(args)
    from featkit.tasks import knn, linear

    source, datasets = source_from(args), split_list(args.dataset)
    label_map = None if args.label_map is None else str(args.label_map)
    if args.probe == "linear" and args.protocol == "fgbmk":
        refuse_fgbmk_ci(args, "fgbmk_linear")
        return _run_fgbmk(args, datasets)
    if args.probe == "linear" and args.fgbmk:
        raise FeatkitError("--fgbmk settings apply to --protocol fgbmk")
    if args.probe == "linear":
        settings = linear.Settings(
            normalization=args.normalization,
            c_grid=tuple(_numbers(args.c_grid, "--c-grid", float)) if args.c_grid else None,
            refit_on_val=not args.no_refit_on_val, tol=args.tol, max_iter=args.max_iter,
            seed=args.seed, device=args.device, merge=args.merge, label_map=label_map,
            ci=interval_from(args),
        )
        if args.layers:
            return _run_layers(args, source, datasets, linear=settings)
        save = args.save_probe or linear.default_probe_path(args.json, source, datasets,
                                                            label_map)
        records = linear.run(source, datasets, settings, save_probe=save,
                             progress=not args.no_progress).records
    else:
        settings = knn.Settings(
            ks=tuple(_numbers(args.k, "--k", int)), primary_k=args.primary_k,
            temperature=args.temperature, train_only=args.train_only, device=args.device,
            merge=args.merge, label_map=label_map, ci=interval_from(args),
        )
        if args.layers:
            return _run_layers(args, source, datasets, knn=settings)
        records = knn.run(source, datasets, settings, progress=not args.no_progress)
    if len(records) == 1:
        emit(records[0], probe_table(records[0]), args.json)
    else:
        from featkit.results import write_result

        print("\n\n".join(probe_table(r) for r in records))
        if args.json:
            write_result(records, args.json)  # several datasets: a JSON list of records
    for record in records:
        if "probe_file" in record:
            print(f"saved probe {record['probe_file']}")
    return 0


def _run_layers(args: argparse.Namespace, source, datasets: list[str], **probe_settings) -> int:
    """``probe linear|knn --layers``: the probe at each layer, one curve record per dataset."""
    from featkit.results import format_table, write_result
    from featkit.tasks import layers

    settings = layers.Settings(probe=args.probe, layers=args.layers, **probe_settings)
    records = layers.run(source, datasets, settings, progress=not args.no_progress).records
    for record in records:
        rows = [{"layer": p["layer"], "kind": p["kind"], "top1": p["top1"], "top5": p["top5"]}
                for p in record["metrics"]["curve"]]
        print(f"{record['model']} on {record['dataset']}: {args.probe} probe by layer of "
              f"{record['features']} (best: layer {record['best_layer']})")
        print(format_table(rows, ["layer", "kind", "top1", "top5"]))
        for warning in record["warnings"]:
            print(f"warning: {warning}")
    if args.json:
        write_result(records[0] if len(records) == 1 else records, args.json)
    return 0


def _run_fgbmk(args: argparse.Namespace, datasets: list[str]) -> int:
    """``probe linear --protocol fgbmk``: FG-BMK's linear evaluation, one record per dataset."""
    from featkit.results import write_result
    from featkit.tasks.fgbmk import linear as fgbmk_linear

    if args.merge or args.label_map:
        raise FeatkitError("--protocol fgbmk probes one dataset at a time, without --merge or "
                           "--label-map (FG-BMK's released code has neither)")
    done = [run_fgbmk(args, fgbmk_linear, dataset) for dataset in datasets]
    if len(done) == 1:
        emit(*done[0], args.json)
        return 0
    print("\n\n".join(table for _, table in done))
    if args.json:
        write_result([record for record, _ in done], args.json)
    return 0


def _numbers(text: str, option: str, kind: type) -> list:
    try:
        return [kind(t) for t in split_list(text)]
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise FeatkitError(f"{option} must be comma-separated {what}, got {text!r}") from None
