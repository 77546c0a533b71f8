"""``featkit perturb``: linear-probe accuracy under PGD perturbation, swept over the budget eps."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    emit,
)
from featkit.errors import FeatkitError

NAME = "perturb"
HELP = "linear-probe accuracy under PGD perturbation of features (or images), swept over eps"
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

DEFAULT_FEATURE_EPS = "0,0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2"
DEFAULT_IMAGE_EPS = "0,1/255,2/255,4/255,8/255"
#: ``featkit probe linear``'s defaults, so a probe trained here is the one that command trains.
PROBE_DEFAULTS = {"tol": 1e-6, "max_iter": 1000, "refit_on_val": True}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_dataset(parser)
    add_features(parser)
    parser.add_argument("--space", default="feature", choices=["feature", "image"],
                        help="perturb the cached features (default) or the input pixels")
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"],
                        help="budget norm (default: linf)")
    parser.add_argument(
        "--eps", default=None,
        help="comma-separated budgets; fractions like 8/255 allowed (default: "
        f"{DEFAULT_FEATURE_EPS} relative to the mean feature norm for --space feature, which "
        f"implies --eps-rel; {DEFAULT_IMAGE_EPS} for --space image)",
    )
    parser.add_argument("--eps-rel", action="store_true",
                        help="--eps (and --alpha) are fractions of the mean feature norm of the "
                        "attacked set (mean ||x||_inf for linf, mean ||x||_2 for l2)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (default: 10)")
    parser.add_argument("--alpha", default=None,
                        help="step size in the units of --eps (default: 2.5 * eps / steps)")
    parser.add_argument("--random-start", action="store_true",
                        help="start from a uniform draw in the eps-ball (default: from the "
                        "clean point)")
    parser.add_argument("--target", default="none", choices=["none", "least-likely", "random"],
                        help="targeted attack towards the least-likely or a random other class "
                        "(default: none, untargeted)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of random starts and random targets (default: 0)")
    parser.add_argument("--split", default="test", help="split to attack (default: test)")
    parser.add_argument(
        "--probe", default=None,
        help="reuse a saved linear probe (.npz/.pt, e.g. the one 'featkit probe linear' saved) "
        "instead of training one",
    )
    parser.add_argument("--save-probe", default=None, help="write the trained probe here")
    parser.add_argument("--normalization", default="l2", choices=["l2", "standardize", "none"],
                        help="feature normalisation of a probe trained here (default: l2)")
    parser.add_argument("--c-grid", default=None,
                        help="comma-separated C values swept on val for a probe trained here "
                        "(default: as 'featkit probe linear')")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="images per attack batch with --space image (default: 32)")
    parser.add_argument("--data-root", default=None,
                        help="dataset root for --space image (default: the one recorded in "
                        "the cache)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    add_outputs(parser, plot=True)


def parse_eps(text: str, option: str = "--eps") -> list[float]:
    """``"0,0.01,1/255"`` -> non-negative floats; a one-line error names the bad entry."""
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            if "/" in item:
                num, den = item.split("/")
                value = float(num) / float(den)
            else:
                value = float(item)
        except (ValueError, ZeroDivisionError):
            raise FeatkitError(
                f"{option} entry {item!r} is not a number (use e.g. 0.05 or 8/255)") from None
        if not math.isfinite(value) or value < 0:
            raise FeatkitError(f"{option} entry {item!r} must be a non-negative finite number")
        values.append(value)
    if not values:
        raise FeatkitError(f"{option} names no value")
    return values


# --------------------------------------------------------------------------- probe


def _train_probe(model, dataset, kind, *, normalization, c_grid, seed, device, cache_dir,
                 weights, adapter, progress):
    import featkit
    from probes.linear import fit_linear_probe

    train, val = (featkit.load(model, dataset, split, kind, cache_dir=cache_dir, weights=weights,
                               adapter=adapter) for split in ("train", "val"))
    if list(train.class_names) != list(val.class_names):
        raise FeatkitError(f"{dataset}: the train and val cache files list different classes; "
                           f"re-extract both ({train.path}, {val.path})")
    fit = fit_linear_probe(train.features, train.labels, val.features, val.labels,
                           class_names=train.class_names, normalization=normalization,
                           c_grid=c_grid, seed=seed, device=device, progress=progress,
                           **PROBE_DEFAULTS)
    info = {"source": "trained", "protocol": "featkit probe linear", **fit.settings(),
            "val_sweep": fit.sweep_curve()}
    return fit.probe, info


def _load_probe(path, test):
    from probes.linear import LinearProbe

    probe = LinearProbe.load(path)
    if probe.dim != test.features.shape[1]:
        raise FeatkitError(f"probe {path} takes {probe.dim}-d features but {test.path} holds "
                           f"{test.features.shape[1]}-d '{test.kind}' features; pass the probe "
                           f"trained on these features")
    if list(probe.class_names) != list(test.class_names):
        raise FeatkitError(f"probe {path} was trained on other classes than {test.dataset}'s "
                           f"({len(probe.class_names)} vs {len(test.class_names)} classes)")
    return probe, {"source": str(path), "C": probe.C, "normalization": probe.normalization}


# --------------------------------------------------------------------------- image space


class DecodedImages:
    """The images of cached samples, decoded and transformed lazily: ``len()`` and slices give
    normalised ``B x C x H x W`` batches in the cache's row order."""

    def __init__(self, dataset, sample_ids: Sequence[str], transform) -> None:
        by_id = {}
        for split in dataset.splits:
            for sample in dataset.samples(split):
                by_id.setdefault(sample.sample_id, sample)
        missing = [s for s in sample_ids if s not in by_id]
        if missing:
            raise FeatkitError(
                f"{len(missing)} cached samples ({', '.join(missing[:3])}) are not in the "
                f"dataset at {dataset.root}; pass the --data-root the features came from"
            )
        self.dataset = dataset
        self.samples = [by_id[s] for s in sample_ids]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, rows: slice):
        import torch

        return torch.stack([self.transform(self.dataset.load_image(s)) for s in self.samples[rows]])

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def _image_sweep(model, dataset, kind, test, probe, eps, *, norm, steps, alpha, random_start,
                 target, seed, batch_size, data_root, device, weights, adapter, progress):
    import extractors
    from featkit.datasets import open_dataset
    from featkit.extraction import resolve_device
    from probes.image_attack import extractor_normalization, feature_function, image_eps_sweep

    device = resolve_device(device)
    options = {"adapter": str(adapter)} if adapter else {}
    extractor = extractors.load_extractor(model, weights=weights, device=device, options=options)
    cached = test.meta.get("weights")
    if cached and extractor.weights_identity != cached:
        raise FeatkitError(f"the loaded {model} has weights {extractor.weights_identity} but the "
                           f"cached features came from {cached}; pass the same --weights")
    root = data_root or test.meta.get("data_root")
    images = DecodedImages(open_dataset(dataset, root), test.sample_ids, extractor.transform)
    if not np.array_equal(images.labels(), test.labels):
        raise FeatkitError(f"the labels of {dataset} at {root} differ from the cached ones; "
                           f"re-extract or pass the right --data-root")
    mean, std = extractor_normalization(extractor)
    sweep, clean = image_eps_sweep(
        feature_function(extractor, kind), probe, images, test.labels, eps, mean=mean, std=std,
        norm=norm, steps=steps, alpha=alpha, random_start=random_start, target=target, seed=seed,
        batch_size=batch_size, device=device, progress=progress,
    )
    diff = np.abs(clean - test.features)
    scale = float(np.abs(test.features).max()) or 1.0
    consistency = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_diff": float(diff.max()) / scale if diff.size else 0.0,
        "cached_clean_top1": float(np.mean(probe.predict(test.features) == test.labels)),
        "note": "clean features recomputed through the differentiable path vs the cache",
    }
    if consistency["max_rel_diff"] > 1e-3:
        print(f"featkit: warning: recomputed clean features differ from the cache by up to "
              f"{consistency['max_rel_diff']:.2g} (relative); the cache may come from another "
              f"precision or device", file=sys.stderr)
    extra = {"mean": list(mean), "std": list(std), "device": device, "batch_size": batch_size,
             "data_root": str(root)}
    return sweep, consistency, extra


# --------------------------------------------------------------------------- the record


def perturb_record(
    model: str,
    dataset: str,
    *,
    features: str = "visual",
    space: str = "feature",
    norm: str = "linf",
    eps: Sequence[float] | str | None = None,
    eps_rel: bool = False,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = False,
    target: str = "none",
    seed: int = 0,
    split: str = "test",
    probe: str | os.PathLike | None = None,
    save_probe: str | os.PathLike | None = None,
    normalization: str = "l2",
    c_grid: Sequence[float] | None = None,
    batch_size: int = 32,
    data_root: str | os.PathLike | None = None,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    adapter: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], Any]:
    """Train (or load) the probe, run the eps sweep, and build the result record (task
    ``"perturb"``; metrics ``clean_top1`` and ``sweep``). Returns ``(record, sweep)``.

    ``eps=None`` picks the default budgets: relative ones (``eps_rel`` implied) in feature space,
    ``0..8/255`` in image space."""
    import featkit
    from featkit.results import make_result
    from probes.perturb import eps_sweep

    if space not in ("feature", "image"):
        raise FeatkitError(f"--space must be feature or image, got {space!r}")
    if space == "image" and eps_rel:
        raise FeatkitError("--eps-rel applies to --space feature; image budgets are in pixel "
                           "units (e.g. --eps 0,2/255,8/255)")
    if eps is None:
        eps = DEFAULT_IMAGE_EPS if space == "image" else DEFAULT_FEATURE_EPS
        eps_rel = eps_rel or space == "feature"
    values = parse_eps(eps) if isinstance(eps, str) else [float(e) for e in eps]
    if steps < 0:
        raise FeatkitError(f"--steps must be non-negative, got {steps}")
    test = featkit.load(model, dataset, split, features, cache_dir=cache_dir, weights=weights,
                        adapter=adapter)
    torch_device = None if device == "auto" else device
    if probe is not None:
        head, probe_info = _load_probe(probe, test)
    else:
        head, probe_info = _train_probe(model, dataset, features, normalization=normalization,
                                        c_grid=c_grid, seed=seed, device=torch_device,
                                        cache_dir=cache_dir, weights=weights, adapter=adapter,
                                        progress=progress)
        if list(head.class_names) != list(test.class_names):
            raise FeatkitError(f"{dataset}: the {split} cache file lists other classes than "
                               f"train/val; re-extract it ({test.path})")
    if save_probe:
        probe_info["saved_to"] = str(head.save(save_probe))

    attack = dict(norm=norm, steps=steps, alpha=alpha, random_start=random_start, target=target,
                  seed=seed, progress=progress)
    extra: dict[str, Any] = {"probe": probe_info}
    if space == "feature":
        sweep = eps_sweep(head, test.features, test.labels, values, eps_rel=eps_rel,
                          device=torch_device, **attack)
    else:
        sweep, consistency, image_settings = _image_sweep(
            model, dataset, features, test, head, values, batch_size=batch_size,
            data_root=data_root, device=device, weights=weights, adapter=adapter, **attack)
        extra["consistency"] = consistency
    settings = {**sweep.settings(), "split": split, "alpha_given": alpha,
                "probe_normalization": head.normalization}
    if space == "image":
        settings.update(image_settings)
    extra["counts"] = {split: sweep.n}
    record = make_result("perturb", model=test.model or model, dataset=dataset,
                         features=test.kind, metrics=sweep.metrics(), settings=settings,
                         provenance=dict(test.meta), extra=extra)
    return record, sweep


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
    from probes.perturb_plot import plot_sweep

    alpha = None
    if args.alpha is not None:
        alpha = parse_eps(args.alpha, "--alpha")
        if len(alpha) != 1:
            raise FeatkitError("--alpha takes one value")
        alpha = alpha[0]
    record, sweep = perturb_record(
        args.model, args.dataset, features=args.features, space=args.space, norm=args.norm,
        eps=args.eps, eps_rel=args.eps_rel, steps=args.steps, alpha=alpha,
        random_start=args.random_start, target=args.target, seed=args.seed, split=args.split,
        probe=args.probe, save_probe=args.save_probe, normalization=args.normalization,
        c_grid=parse_eps(args.c_grid, "--c-grid") if args.c_grid else None,
        batch_size=args.batch_size, data_root=args.data_root, device=args.device,
        cache_dir=args.cache_dir, weights=args.weights, adapter=args.adapter,
        progress=not args.no_progress,
    )
    print(summary_line(record))
    emit(record, sweep_table(record), args.json)
    if args.plot:
        title = f"{record['model']} / {record['dataset']} ({record['features']})"
        print(f"wrote {Path(plot_sweep(sweep, args.plot, title=title))}", file=sys.stderr)
    return 0
