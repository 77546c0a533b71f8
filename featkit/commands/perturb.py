"""``featkit perturb``: linear-probe accuracy under PGD perturbation, swept over the budget eps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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
    positive_int,
    source_from,
)
from featkit.errors import FeatkitError

NAME = "perturb"
HELP = "linear-probe accuracy under PGD perturbation of features (or images), swept over eps"
#: Output options checked before the work starts (see ``commands.common.check_outputs``).
OUTPUTS: dict[str, str] = {"json": "file", "plot": "file", "save_probe": "file"}
DESCRIPTION = (
    "Train the linear probe (logistic regression, C chosen on val, refit on train + val, as "
    "'featkit probe linear') or load one with --probe, then attack the test split with PGD "
    "(Madry et al.) on the probe's cross-entropy and report top-1 for each budget eps. "
    "--space feature (default) perturbs the cached features directly, without any clamping; eps "
    "is in raw feature units (before the probe's own normalisation), or with --eps-rel a "
    "fraction of the mean feature norm in the attack's norm. --space image attacks the pixels "
    "(in [0, 1], eps in pixel units, e.g. 8/255) with torchattacks through the model and the "
    "probe, and recomputes the features."
)


def _budgets_text(values, *, pixels: bool = False) -> str:
    """Budgets as users type them (pixel budgets as ``k/255``)."""
    if pixels:
        return ",".join(f"{round(v * 255)}/255" if v else "0" for v in values)
    return ",".join(f"{v:g}" for v in values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from featkit.tasks.perturb import DEFAULT_FEATURE_EPS, DEFAULT_IMAGE_EPS, Settings

    add_model_dataset(parser, data_root=True)
    add_features(parser)
    parser.add_argument("--space", default=Settings.space, choices=["feature", "image"],
                        help="perturb the cached features (default) or the input pixels")
    parser.add_argument("--norm", default=Settings.norm, choices=["linf", "l2"],
                        help=f"budget norm (default: {Settings.norm})")
    parser.add_argument(
        "--eps", default=None,
        help="comma-separated budgets; fractions like 8/255 allowed (default: "
        f"{_budgets_text(DEFAULT_FEATURE_EPS)} relative to the mean feature norm for --space "
        f"feature, which implies --eps-rel; {_budgets_text(DEFAULT_IMAGE_EPS, pixels=True)} for --space "
        "image)",
    )
    parser.add_argument("--eps-rel", action="store_true",
                        help="--eps (and --alpha) are fractions of the mean feature norm of the "
                        "attacked set (mean ||x||_inf for linf, mean ||x||_2 for l2)")
    parser.add_argument("--steps", type=non_negative_int, default=Settings.steps,
                        help=f"PGD steps (default: {Settings.steps})")
    parser.add_argument("--alpha", default=None,
                        help="step size in the units of --eps (default: 2.5 * eps / steps)")
    parser.add_argument("--random-start", action="store_true",
                        help="start from a uniform draw in the eps-ball (default: from the "
                        "clean point)")
    parser.add_argument("--target", default=Settings.target,
                        choices=["none", "least-likely", "random"],
                        help="targeted attack towards the least-likely or a random other class "
                        "(default: none, untargeted)")
    parser.add_argument("--seed", type=non_negative_int, default=Settings.seed,
                        help=f"seed of random starts and random targets (default: {Settings.seed})")
    parser.add_argument("--split", default=Settings.split,
                        help=f"split to attack (default: {Settings.split})")
    parser.add_argument(
        "--probe", default=None,
        help="reuse a saved linear probe (.npz/.pt, e.g. the one 'featkit probe linear' saved) "
        "instead of training one",
    )
    parser.add_argument("--save-probe", default=None, help="write the trained probe here")
    parser.add_argument("--normalization", default=Settings.normalization,
                        choices=["l2", "standardize", "none"],
                        help="feature normalisation of a probe trained here (default: "
                        f"{Settings.normalization})")
    parser.add_argument("--c-grid", default=None,
                        help="comma-separated C values swept on val for a probe trained here "
                        "(default: as 'featkit probe linear')")
    parser.add_argument("--batch-size", type=positive_int, default=Settings.batch_size,
                        help="images per attack batch with --space image (default: "
                        f"{Settings.batch_size})")
    parser.add_argument("--device", type=device, default=Settings.device,
                        help=f"cpu, cuda or auto (default: {Settings.device})")
    add_ci(parser, unit="the attacked items (clean and at each budget)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    add_outputs(parser, plot=True)


def sweep_table(record: dict[str, Any]) -> str:
    """The sweep as a readable table (budgets as numbers, accuracies in percent)."""
    from featkit.results import format_table

    settings = record["settings"]
    image = settings["space"] == "image"
    rows = []
    for row in record["metrics"]["sweep"]:
        entry = {"eps": f"{row['eps']:.4g}"}
        if image:
            entry["eps*255"] = f"{255 * row['eps']:.3g}"
        else:
            entry["eps/mean|x|"] = "" if row["eps_rel"] is None else f"{row['eps_rel']:.4g}"
        entry.update({
            "top1 %": _pct(row["top1"]),
            "success %": _pct(row["success_rate"]),
            "mean |delta|": f"{row['mean_delta_norm']:.4g}",
            "feature shift": f"{row['mean_feature_shift']:.4g}",
            "loss": f"{row['mean_loss_adv']:.4g}",
        })
        rows.append(entry)
    return format_table(rows)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def summary_line(record: dict[str, Any]) -> str:
    s = record["settings"]
    units = s["eps_units"] if s["eps_mode"] == "absolute" else (
        f"fractions of {s['eps_scale_rule']} = {s['eps_scale']:.4g}")
    probe = record["probe"]
    source = "trained here" if probe["source"] == "trained" else f"from {probe['source']}"
    return (
        f"{record['model']} on {record['dataset']} ({record['features']}, {s['split']}, "
        f"n={s['n']}): PGD {s['norm']} in {s['space']} space, {s['steps']} steps, "
        f"target {s['target']}, random start {'on' if s['random_start'] else 'off'}; "
        f"eps in {units}; probe {source} (normalisation {s['probe_normalization']}); "
        f"clean top-1 {100 * record['metrics']['clean_top1']:.2f}"
    )


def run(args: argparse.Namespace) -> int:
    from featkit.results import warnings_text
    from featkit.tasks.intervals import interval_lines
    from featkit.tasks.perturb import Outcome, Settings, parse_budgets
    from featkit.tasks.perturb import run as run_perturb
    from probes.perturb_plot import plot_sweep

    alpha = None
    if args.alpha is not None:
        values = parse_budgets(args.alpha, "--alpha")
        if len(values) != 1:
            raise FeatkitError("--alpha takes one value")
        alpha = values[0]
    settings = Settings(
        space=args.space, norm=args.norm,
        eps=None if args.eps is None else tuple(parse_budgets(args.eps)), eps_rel=args.eps_rel,
        steps=args.steps, alpha=alpha, random_start=args.random_start, target=args.target,
        seed=args.seed, split=args.split, probe=args.probe, normalization=args.normalization,
        c_grid=tuple(parse_budgets(args.c_grid, "--c-grid")) if args.c_grid else None,
        batch_size=args.batch_size, data_root=args.data_root, device=args.device,
        ci=interval_from(args),
    )
    outcome: Outcome = run_perturb(source_from(args), args.dataset, settings,
                                   save_probe=args.save_probe, progress=not args.no_progress)
    record = outcome.record
    print(summary_line(record))
    emit(record, sweep_table(record) + interval_lines(record) + warnings_text(record), args.json)
    if args.plot:
        title = f"{record['model']} / {record['dataset']} ({record['features']})"
        print(f"wrote {Path(plot_sweep(outcome.sweep, args.plot, title=title))}", file=sys.stderr)
    return 0
