"""``featkit probe linear|knn``: classification probes of cached features.

``linear``: multinomial logistic regression (L-BFGS), C swept on the val split, refit, one score
on test. ``knn``: DINOv2's weighted k-NN (cosine, exp(sim / 0.07) votes). ``--merge`` trains one
probe on several datasets at once (namespaced classes) and reports each dataset's drop against
its own single-dataset probe (FG-BMK Fig. 8).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.commands.common import (
    add_cache_dir,
    add_features,
    add_model_dataset,
    add_outputs,
    emit,
    float_list,
    split_list,
)
from featkit.errors import FeatkitError

NAME = "probe"
HELP = "linear-probe (logistic regression) or kNN top-1/top-5 of cached features"
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
    probes = parser.add_subparsers(dest="probe", metavar="PROBE", required=True)
    linear = probes.add_parser(
        "linear", help="logistic-regression probe with a validation sweep over C",
        description=DESCRIPTION,
    )
    _add_common(linear)
    linear.add_argument(
        "--normalization", default="l2", choices=["l2", "standardize", "none"],
        help="feature normalisation before the probe (default: l2; standardize uses train "
        "mean/std)",
    )
    linear.add_argument(
        "--c-grid", default=None,
        help="comma-separated C values (scikit-learn's inverse L2 strength; default: 15 values "
        "10^-2..10^5 for unit-norm features, rescaled by the mean squared norm otherwise)",
    )
    linear.add_argument(
        "--no-refit-on-val", action="store_true",
        help="keep the train-only fit at the chosen C instead of refitting on train + val",
    )
    linear.add_argument("--tol", type=float, default=1e-6,
                        help="L-BFGS gradient tolerance (scikit-learn's tol; default: 1e-6)")
    linear.add_argument("--max-iter", type=int, default=1000,
                        help="L-BFGS iterations per C (default: 1000)")
    linear.add_argument("--seed", type=int, default=0,
                        help="seed recorded with the result; the fit itself has no randomness "
                        "(default: 0)")
    linear.add_argument(
        "--save-probe", default=None,
        help="write the trained probe (.npz or .pt) here (default: next to --json as "
        "<name>.probe.npz, else <cache>/_probes/<model>/<datasets>-<features>.npz)",
    )
    knn = probes.add_parser(
        "knn", help="weighted k-NN probe (DINOv2 protocol)", description=DESCRIPTION
    )
    _add_common(knn)
    knn.add_argument("--k", default="10,20", help="comma-separated k values (default: 10,20)")
    knn.add_argument("--primary-k", type=int, default=None,
                     help="k reported as top1/top5 (default: 20 if given, else the largest)")
    knn.add_argument("--temperature", type=float, default=0.07,
                     help="vote temperature T in exp(sim / T) (default: 0.07)")
    knn.add_argument(
        "--train-only", action="store_true",
        help="neighbours from the train split only (default: train + val, i.e. all "
        "training data, since kNN tunes nothing)",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_model_dataset(parser, multi_dataset=True)
    add_features(parser)
    parser.add_argument(
        "--merge", action="store_true",
        help="train one probe on the union of the listed datasets (needs two or more)",
    )
    parser.add_argument(
        "--label-map", default=None,
        help='JSON file {"old class": "existing class", ...} merging classes of one dataset',
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_dir(parser)
    add_outputs(parser)


# --------------------------------------------------------------------------- loading


@dataclass
class _Splits:
    """One dataset's features, labels and class names per split, after any label map."""

    dataset: str
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: tuple[str, ...]
    meta: dict[str, Any]
    model: str
    identity: str  # model id plus weights identity: what must match across merged datasets
    kind: str


def read_label_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a label-map JSON file (the contents are checked by probes.labels)."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"label map {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FeatkitError(f"label map {path} is not valid JSON ({err})") from err


def _load_dataset(
    model: str,
    dataset: str,
    splits: Sequence[str],
    kind: str,
    *,
    cache_dir: str | os.PathLike | None,
    weights: str | None,
    adapter: str | None,
    label_map: tuple[dict[str, str], str] | None,
) -> _Splits:
    import featkit
    from probes.labels import build_label_map

    sets = {
        split: featkit.load(model, dataset, split, kind, cache_dir=cache_dir, weights=weights,
                            adapter=adapter)
        for split in splits
    }
    first = sets[splits[0]]
    for split, fs in sets.items():
        if list(fs.class_names) != list(first.class_names):
            raise FeatkitError(
                f"{dataset}: the {split} and {splits[0]} cache files list different classes; "
                f"re-extract both ({fs.path}, {first.path})"
            )
    class_names = tuple(first.class_names)
    labels = {split: fs.labels for split, fs in sets.items()}
    if label_map is not None:
        mapping, source = label_map
        merge = build_label_map(class_names, mapping, source)
        labels = {split: merge.apply(y) for split, y in labels.items()}
        class_names = merge.class_names
    model_id = first.model or model
    weights_id = first.meta.get("weights")
    return _Splits(
        dataset=dataset,
        features={split: fs.features for split, fs in sets.items()},
        labels=labels,
        class_names=class_names,
        meta=dict(first.meta),
        model=model_id,
        identity=f"{model_id} (weights {weights_id})" if weights_id not in (None, "", "none")
        else model_id,
        kind=first.kind,
    )


def _load_all(
    model: str,
    datasets: Sequence[str],
    splits: Sequence[str],
    kind: str,
    *,
    merge: bool,
    label_map: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    weights: str | None,
    adapter: str | None,
) -> list[_Splits]:
    from probes.labels import FeatureSource, check_same_features

    if not datasets:
        raise FeatkitError("--dataset names no dataset")
    if merge and len(datasets) < 2:
        raise FeatkitError("--merge needs two or more datasets, e.g. --dataset cub,cars,aircraft")
    if label_map is not None and len(datasets) > 1:
        raise FeatkitError(
            "--label-map merges classes within one dataset; run it with a single --dataset"
        )
    mapping = (read_label_map(label_map), str(label_map)) if label_map is not None else None
    loaded = [
        _load_dataset(model, d, splits, kind, cache_dir=cache_dir, weights=weights,
                      adapter=adapter, label_map=mapping)
        for d in datasets
    ]
    if merge:
        check_same_features(
            [FeatureSource(s.dataset, s.identity, s.kind, int(s.features[splits[0]].shape[1]))
             for s in loaded]
        )
    return loaded


def _merge(loaded: Sequence[_Splits], splits: Sequence[str]):
    """Concatenate splits across datasets in the merged label space; returns (space, features,
    labels, owner) where owner[split] is each row's dataset index."""
    from probes.labels import build_label_space

    space = build_label_space([(s.dataset, s.class_names) for s in loaded])
    features, labels, owner = {}, {}, {}
    for split in splits:
        features[split] = np.concatenate([s.features[split] for s in loaded])
        labels[split] = np.concatenate(
            [space.to_merged(s.dataset, s.labels[split]) for s in loaded]
        )
        owner[split] = np.concatenate(
            [np.full(len(s.labels[split]), i) for i, s in enumerate(loaded)]
        )
    return space, features, labels, owner


def _provenance(loaded: Sequence[_Splits]) -> dict[str, Any]:
    provenance = dict(loaded[0].meta)
    if len(loaded) > 1:
        provenance["datasets"] = {s.dataset: s.meta for s in loaded}
    return provenance


# --------------------------------------------------------------------------- linear


def _default_probe_path(
    json_path: str | None, cache_dir: str | os.PathLike | None, model: str, datasets: str,
    kind: str, label_map: str | None,
) -> Path:
    if json_path:
        path = Path(json_path)
        return path.with_name(path.stem + ".probe.npz")
    from featkit.cache import cache_root, slug

    suffix = f"-{Path(label_map).stem}" if label_map else ""
    name = f"{datasets.replace(',', '+')}-{kind}{suffix}.npz"
    return cache_root(cache_dir) / "_probes" / slug(model) / name


def linear_probe_record(
    model: str,
    datasets: str | Sequence[str],
    *,
    features: str = "visual",
    merge: bool = False,
    label_map: str | os.PathLike | None = None,
    normalization: str = "l2",
    c_grid: Sequence[float] | None = None,
    refit_on_val: bool = True,
    tol: float = 1e-6,
    max_iter: int = 1000,
    seed: int = 0,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    adapter: str | None = None,
    save_probe: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the linear probe on cached features and build result records (task
    ``"linear_probe"``): one per dataset, or one merged record with ``--merge``. Each trained
    probe is saved to ``save_probe`` (for several datasets: the dataset name is appended)."""
    from featkit.results import make_result
    from probes.linear import evaluate_linear_probe, fit_linear_probe

    names = split_list(datasets) if isinstance(datasets, str) else list(datasets)
    splits = ("train", "val", "test")
    loaded = _load_all(model, names, splits, features, merge=merge, label_map=label_map,
                       cache_dir=cache_dir, weights=weights, adapter=adapter)
    options = dict(
        normalization=normalization, c_grid=c_grid, refit_on_val=refit_on_val, tol=tol,
        max_iter=max_iter, seed=seed, device=device, progress=progress,
    )

    def run_one(feats, labels, class_names):
        fit = fit_linear_probe(feats["train"], labels["train"], feats["val"], labels["val"],
                               class_names=class_names, **options)
        return fit, evaluate_linear_probe(fit, feats["test"], labels["test"])

    def settings(result) -> dict[str, Any]:
        return {
            **result.settings(),
            "splits": {"train": "train", "val": "val", "test": "test"},
            "label_map": None if label_map is None else str(label_map),
            "merge": merge,
            "device": device or "auto",
        }

    records = []
    if not merge:
        for s in loaded:
            _, result = run_one(s.features, s.labels, s.class_names)
            path = Path(save_probe) if save_probe else None
            if path is not None and len(loaded) > 1:
                path = path.with_name(f"{path.stem}-{s.dataset}{path.suffix}")
            records.append(make_result(
                "linear_probe", model=s.model, dataset=s.dataset, features=s.kind,
                metrics=result.metrics(), settings=settings(result), provenance=_provenance([s]),
                extra={
                    "sweep": result.sweep_curve(),
                    "per_class": result.test.per_class,
                    "counts": {"train": result.fit.n_train, "val": result.fit.n_val,
                               "test": result.test.n_samples},
                    **_label_map_extra(label_map, s),
                    **({"probe_file": str(result.fit.probe.save(path))} if path else {}),
                },
            ))
        return records

    from probes.classification import score_classification
    from probes.labels import merged_vs_single

    single = {}
    single_c = {}
    for s in loaded:
        _, result = run_one(s.features, s.labels, s.class_names)
        single[s.dataset], single_c[s.dataset] = result.top1, result.C
    space, feats, labels, owner = _merge(loaded, splits)
    fit, result = run_one(feats, labels, space.class_names)
    scores = fit.probe.predict_scores(feats["test"])
    merged = {
        s.dataset: score_classification(
            scores[owner["test"] == i], labels["test"][owner["test"] == i], space.class_names
        ).top1
        for i, s in enumerate(loaded)
    }
    per_dataset, mean_drop = merged_vs_single(single, merged)
    extra = {
        "per_dataset": per_dataset,
        "mean_drop": mean_drop,
        "single_C": single_c,
        "label_space": {"datasets": list(space.datasets), "offsets": list(space.offsets),
                        "sizes": list(space.sizes)},
        "sweep": result.sweep_curve(),
        "per_class": result.test.per_class,
        "counts": {"train": result.fit.n_train, "val": result.fit.n_val,
                   "test": result.test.n_samples},
    }
    if save_probe:
        extra["probe_file"] = str(fit.probe.save(save_probe))
    records.append(make_result(
        "linear_probe", model=loaded[0].model, dataset=",".join(names), features=loaded[0].kind,
        metrics=result.metrics(), settings=settings(result), provenance=_provenance(loaded),
        extra=extra,
    ))
    return records


def _label_map_extra(label_map: str | os.PathLike | None, s: _Splits) -> dict[str, Any]:
    if label_map is None:
        return {}
    return {"label_map": {"file": str(label_map), "class_names": list(s.class_names)}}


# --------------------------------------------------------------------------- knn


def knn_record(
    model: str,
    datasets: str | Sequence[str],
    *,
    features: str = "visual",
    merge: bool = False,
    label_map: str | os.PathLike | None = None,
    ks: Sequence[int] = (10, 20),
    primary_k: int | None = None,
    temperature: float = 0.07,
    train_only: bool = False,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    adapter: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the weighted kNN probe on cached features and build result records (task
    ``"knn"``), one per dataset or one merged record."""
    from featkit.results import make_result
    from probes.classification import score_classification
    from probes.knn import knn_probe, knn_scores, score_knn
    from probes.labels import merged_vs_single

    names = split_list(datasets) if isinstance(datasets, str) else list(datasets)
    bank_splits = ("train",) if train_only else ("train", "val")
    splits = (*bank_splits, "test")
    loaded = _load_all(model, names, splits, features, merge=merge, label_map=label_map,
                       cache_dir=cache_dir, weights=weights, adapter=adapter)
    options = dict(ks=ks, primary_k=primary_k, temperature=temperature, device=device,
                   progress=progress)

    def bank(feats, labels):
        return (np.concatenate([feats[s] for s in bank_splits]),
                np.concatenate([labels[s] for s in bank_splits]))

    def settings(result) -> dict[str, Any]:
        return {**result.settings(), "bank": "+".join(bank_splits), "test_split": "test",
                "label_map": None if label_map is None else str(label_map), "merge": merge,
                "device": device or "auto"}

    records = []
    if not merge:
        for s in loaded:
            train_x, train_y = bank(s.features, s.labels)
            result = knn_probe(train_x, train_y, s.features["test"], s.labels["test"],
                               class_names=s.class_names, **options)
            primary = result.per_k[result.primary_k]
            records.append(make_result(
                "knn", model=s.model, dataset=s.dataset, features=s.kind,
                metrics=result.metrics(), settings=settings(result),
                provenance=_provenance([s]),
                extra={"per_class": primary.per_class,
                       "counts": {"bank": len(train_y), "test": primary.n_samples},
                       **_label_map_extra(label_map, s)},
            ))
        return records

    single = {}
    for s in loaded:
        train_x, train_y = bank(s.features, s.labels)
        single[s.dataset] = knn_probe(train_x, train_y, s.features["test"], s.labels["test"],
                                      class_names=s.class_names, **options).top1
    space, feats, labels, owner = _merge(loaded, splits)
    train_x, train_y = bank(feats, labels)
    scores = knn_scores(train_x, train_y, feats["test"], ks, space.num_classes,
                        temperature=temperature, device=device, progress=progress)
    result = score_knn(scores, labels["test"], space.class_names, primary_k=primary_k,
                       temperature=temperature, n_train=len(train_y))
    votes = scores[result.primary_k]
    merged = {
        s.dataset: score_classification(
            votes[owner["test"] == i], labels["test"][owner["test"] == i], space.class_names
        ).top1
        for i, s in enumerate(loaded)
    }
    per_dataset, mean_drop = merged_vs_single(single, merged)
    primary = result.per_k[result.primary_k]
    records.append(make_result(
        "knn", model=loaded[0].model, dataset=",".join(names), features=loaded[0].kind,
        metrics=result.metrics(), settings=settings(result), provenance=_provenance(loaded),
        extra={
            "per_dataset": per_dataset,
            "mean_drop": mean_drop,
            "label_space": {"datasets": list(space.datasets), "offsets": list(space.offsets),
                            "sizes": list(space.sizes)},
            "per_class": primary.per_class,
            "counts": {"bank": len(train_y), "test": primary.n_samples},
        },
    ))
    return records


# --------------------------------------------------------------------------- output


def probe_table(record: dict[str, Any]) -> str:
    """The readable summary of a probe record: sweep, metrics and the merged comparison."""
    from featkit.results import format_table, metrics_table

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
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    common = dict(
        features=args.features, merge=args.merge, label_map=args.label_map, device=args.device,
        cache_dir=args.cache_dir, weights=args.weights, adapter=args.adapter,
        progress=not args.no_progress,
    )
    if args.probe == "linear":
        save = args.save_probe or _default_probe_path(
            args.json, args.cache_dir, args.model, args.dataset, args.features, args.label_map
        )
        records = linear_probe_record(
            args.model, args.dataset, normalization=args.normalization,
            c_grid=float_list(args.c_grid) if args.c_grid else None,
            refit_on_val=not args.no_refit_on_val, tol=args.tol, max_iter=args.max_iter,
            seed=args.seed, save_probe=save, **common,
        )
    else:
        try:
            ks = [int(k) for k in split_list(args.k)]
        except ValueError:
            raise FeatkitError(f"--k must be comma-separated integers, got {args.k!r}") from None
        records = knn_record(
            args.model, args.dataset, ks=ks, primary_k=args.primary_k,
            temperature=args.temperature, train_only=args.train_only, **common,
        )
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
