"""The DG protocol: per seed, train each algorithm at every grid value on train, choose the
value on val, score the chosen one once on test; then mean and std over seeds.

Test data never reaches a choice: the grid value of each (algorithm, seed) is picked by its val
worst-group accuracy (or val average accuracy, ``selection="average"``), ties going to the other
val metric and then to the first value of the grid; only that network sees test. With
``resplit`` (the default) each seed also redraws train and val from their union, stratified by
group with the val split's share, as DomainBed's trials do; the seed sets the initialisation
(and MMD's row draws) in any case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from featkit._device import torch_device
from featkit.errors import FeatkitError
from probes._checks import check_finite
from probes._progress import progress_bar
from probes.dg.defaults import (
    ALGORITHMS,
    BURNIN_ALGORITHMS,
    DEFAULT_GRIDS,
    DG_NORMALIZATION,
    DG_RESPLIT,
    DG_SEEDS,
    DG_SELECTION,
    DOMAIN_ALGORITHMS,
    FEATURE_MATCHING,
    FEATURE_MATCHING_NOTE,
    GRID_PARAMETERS,
    SELECTIONS,
)
from probes.dg.groups import group_accuracy, worst_group_accuracy
from probes.dg.train import TrainData, TrainOptions, train_algorithm
from probes.linear.head import normalization_stats, normalize_tensor
from probes.splits import stratified_split

#: Fewer test rows than this in a group make its accuracy, and the worst group, noisy.
MIN_GROUP_ROWS = 5


@dataclass(frozen=True)
class DGSplit:
    """One split: features, labels, GroupDRO / selection ``groups``, invariance ``domains`` and
    the ``eval_groups`` test accuracy is reported over (ids into :class:`GroupNames`)."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    domains: np.ndarray
    eval_groups: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> DGSplit:
        return DGSplit(self.features[index], self.labels[index], self.groups[index],
                       self.domains[index], self.eval_groups[index])


@dataclass(frozen=True)
class GroupNames:
    """Names behind the ids of :class:`DGSplit`."""

    classes: tuple[str, ...]
    groups: tuple[str, ...]
    domains: tuple[str, ...]
    eval_groups: tuple[str, ...]


@dataclass(frozen=True)
class SeedRun:
    """One (algorithm, seed): the val scores of every grid value, the chosen value, and the
    chosen network's test scores and predictions."""

    seed: int
    value: float | None
    val_curve: tuple[dict[str, float | None], ...]
    test_average: float
    test_worst_group: float
    test_per_group: np.ndarray
    predictions: np.ndarray


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.mean(array)), "std": float(np.std(array, ddof=1))
            if len(array) > 1 else 0.0}


@dataclass(frozen=True)
class AlgorithmResult:
    """Every seed's run of one algorithm; ``grid`` is empty where nothing is chosen (ERM, and
    CORAL / MMD on frozen features)."""

    algorithm: str
    parameter: str | None
    grid: tuple[float, ...]
    runs: tuple[SeedRun, ...]

    @property
    def average(self) -> dict[str, float]:
        """Test average accuracy, mean and std (ddof 1) over seeds."""
        return _mean_std([r.test_average for r in self.runs])

    @property
    def worst_group(self) -> dict[str, float]:
        """Test worst-group accuracy, mean and std over seeds."""
        return _mean_std([r.test_worst_group for r in self.runs])

    def per_group(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Each evaluated group's test accuracy, mean and std over seeds (groups with rows)."""
        table = np.stack([r.test_per_group for r in self.runs])
        return {name: _mean_std(table[:, g]) for g, name in enumerate(names)
                if not np.isnan(table[:, g]).any()}

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "grid": list(self.grid),
            "chosen": [r.value for r in self.runs],
            "average": self.average,
            "worst_group": self.worst_group,
            "per_seed": [{"seed": r.seed, "value": r.value, "average": r.test_average,
                          "worst_group": r.test_worst_group, "val": list(r.val_curve)}
                         for r in self.runs],
            "per_group": self.per_group(names),
        }


@dataclass(frozen=True)
class DGResult:
    """All algorithms' results over the same seeds and splits."""

    algorithms: dict[str, AlgorithmResult]
    names: GroupNames
    test_counts: np.ndarray
    test_labels: np.ndarray
    test_eval_groups: np.ndarray
    settings: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())

    def metrics(self) -> dict[str, float]:
        """``<algorithm>.average`` and ``<algorithm>.worst_group``: means over seeds."""
        out = {}
        for name, result in self.algorithms.items():
            out[f"{name}.average"] = result.average["mean"]
            out[f"{name}.worst_group"] = result.worst_group["mean"]
        return out

    def predictions(self) -> dict[str, np.ndarray]:
        """Test predictions per algorithm, ``seeds x test rows``."""
        return {name: np.stack([r.predictions for r in result.runs])
                for name, result in self.algorithms.items()}


def check_grids(algorithms: Sequence[str], grids: Mapping[str, Sequence[float]] | None
                ) -> dict[str, tuple[float, ...]]:
    """The grid of each requested algorithm (given or default), sorted; bad names or values
    are one-line errors."""
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        raise FeatkitError(f"unknown DG algorithm(s) {', '.join(unknown) or '(none given)'} "
                           f"(known: {', '.join(ALGORITHMS)})")
    grids = dict(grids or {})
    extra = [a for a in grids if a not in GRID_PARAMETERS]
    if extra:
        raise FeatkitError(f"--grid {extra[0]}: no hyper-parameter grid for that algorithm "
                           f"(grids: {', '.join(GRID_PARAMETERS)})")
    out = {}
    for algorithm in algorithms:
        if algorithm not in GRID_PARAMETERS:
            out[algorithm] = ()
            continue
        values = tuple(sorted({float(v) for v in grids.get(algorithm, DEFAULT_GRIDS[algorithm])}))
        low, high = (0.0, 1.0) if algorithm == "eqrm" else (0.0, float("inf"))
        if not values or not all(low < v < high for v in values):
            rule = "strictly between 0 and 1" if algorithm == "eqrm" else "positive"
            raise FeatkitError(f"--grid {algorithm}: {GRID_PARAMETERS[algorithm]} values must be "
                               f"{rule}, got {list(values)}")
        out[algorithm] = values
    return out


def _scores(network, data: Mapping[str, Any], num_groups: int
            ) -> tuple[np.ndarray, float, np.ndarray]:
    """``(predictions, average accuracy, per-group accuracy)`` of one network on one split."""
    predictions = network.predict(data["x"]).cpu().numpy()
    labels = data["y_np"]
    per_group = group_accuracy(predictions, labels, data["groups_np"], num_groups)
    return predictions, float(np.mean(predictions == labels)), per_group


def _choose(curve: list[dict[str, float | None]], selection: str) -> int:
    other = "average" if selection == "worst_group" else "worst_group"

    def key(i: int) -> tuple[float, float, int]:
        point = curve[i]
        return (np.nan_to_num(point[f"val_{selection}"], nan=-1.0),
                np.nan_to_num(point[f"val_{other}"], nan=-1.0), -i)

    return max(range(len(curve)), key=key)


def dg_probe(
    train: DGSplit,
    val: DGSplit,
    test: DGSplit,
    *,
    names: GroupNames,
    algorithms: Sequence[str] = ALGORITHMS,
    seeds: int | Sequence[int] = DG_SEEDS,
    grids: Mapping[str, Sequence[float]] | None = None,
    selection: str = DG_SELECTION,
    options: TrainOptions | None = None,
    normalization: str = DG_NORMALIZATION,
    resplit: bool = DG_RESPLIT,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> DGResult:
    """Train, choose on val and test every algorithm for every seed (see the module notes).
    ``seeds``: a count (seeds 0..n-1) or the seeds themselves."""
    options = options or TrainOptions()
    algorithms = list(dict.fromkeys(algorithms))
    grid_of = check_grids(algorithms, grids)
    if selection not in SELECTIONS:
        raise FeatkitError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise FeatkitError("--seeds names no seed")
    for split, part in (("train", train), ("val", val), ("test", test)):
        if len(part) == 0:
            raise FeatkitError(f"the {split} split has no rows with the grouping attributes")
        check_finite(part.features, f"{split} features")
    dev = torch_device(device)
    pool = _concat(train, val)
    val_fraction = len(val) / len(pool)
    warnings = _warnings_before(algorithms, train, names, options)
    runs: dict[str, list[SeedRun]] = {a: [] for a in algorithms}
    for seed in progress_bar(seed_list, progress, "DG seeds"):
        if resplit:
            train_idx, val_idx = stratified_split(pool.groups, val_fraction, seed)
            seed_train, seed_val = pool.take(train_idx), pool.take(val_idx)
        else:
            seed_train, seed_val = train, val
        mean, std = normalization_stats(seed_train.features, normalization)
        prepare = _preparer(normalization, mean, std, dev)
        data = TrainData(
            x=prepare(seed_train.features),
            y=torch.as_tensor(seed_train.labels, device=dev),
            groups=torch.as_tensor(seed_train.groups, device=dev),
            domains=torch.as_tensor(seed_train.domains, device=dev),
            num_classes=len(names.classes), num_groups=len(names.groups),
            num_domains=len(names.domains),
        )
        val_data = {"x": prepare(seed_val.features), "y_np": seed_val.labels,
                    "groups_np": seed_val.groups}
        test_data = {"x": prepare(test.features), "y_np": test.labels,
                     "groups_np": test.eval_groups}
        for algorithm in algorithms:
            values = _values(algorithm, grid_of[algorithm], options)
            networks = train_algorithm(data, algorithm, values, options, seed)
            curve = []
            for value, network in zip(values, networks):
                _, average, per_group = _scores(network, val_data, len(names.groups))
                curve.append({"value": value, "val_average": average,
                              "val_worst_group": worst_group_accuracy(per_group)})
            chosen = _choose(curve, selection)
            predictions, average, per_group = _scores(networks[chosen], test_data,
                                                      len(names.eval_groups))
            runs[algorithm].append(SeedRun(seed, values[chosen], tuple(curve), average,
                                           worst_group_accuracy(per_group), per_group,
                                           predictions))
    results = {}
    for algorithm in algorithms:
        swept = _values(algorithm, grid_of[algorithm], options) != [None]
        results[algorithm] = AlgorithmResult(
            algorithm, GRID_PARAMETERS[algorithm] if swept else None,
            grid_of[algorithm] if swept else (), tuple(runs[algorithm]))
    warnings += _edge_warnings(results, selection)
    test_counts = np.bincount(test.eval_groups, minlength=len(names.eval_groups))
    thin = thin_group_warning(test_counts, names.eval_groups)
    warnings += [thin] if thin else []
    settings = {
        "algorithms": algorithms,
        "seeds": seed_list,
        "selection": f"val {selection.replace('_', '-')} accuracy (ties: the other val "
                     "accuracy, then the first grid value)",
        "grids": {a: list(g) for a, g in grid_of.items() if g},
        "steps": options.steps, "lr": options.lr, "weight_decay": options.weight_decay,
        "burnin": options.burnin, "adapter_dim": options.adapter_dim,
        "mmd_max_rows": options.mmd_max_rows, "normalization": normalization,
        "resplit": resplit, "optimizer": "Adam, full batch",
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
    }
    return DGResult(results, names, test_counts, test.labels, test.eval_groups, settings,
                    tuple(warnings))


def _concat(a: DGSplit, b: DGSplit) -> DGSplit:
    return DGSplit(np.concatenate([a.features, b.features]),
                   np.concatenate([a.labels, b.labels]), np.concatenate([a.groups, b.groups]),
                   np.concatenate([a.domains, b.domains]),
                   np.concatenate([a.eval_groups, b.eval_groups]))


def _preparer(normalization: str, mean, std, dev: torch.device):
    t_mean = None if mean is None else torch.as_tensor(mean, device=dev)
    t_std = None if std is None else torch.as_tensor(std, device=dev)

    def prepare(x: np.ndarray) -> torch.Tensor:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev)
        return normalize_tensor(xt, normalization, t_mean, t_std).contiguous()

    return prepare


def _values(algorithm: str, grid: tuple[float, ...], options: TrainOptions
            ) -> list[float | None]:
    """The grid values trained: none for ERM, none for CORAL / MMD on frozen features (their
    penalty has no gradient there) and none for IRM / V-REx / EQRM when the burn-in covers every
    step: every value would train the same network."""
    if not grid or (algorithm in FEATURE_MATCHING and not options.adapter_dim):
        return [None]
    if algorithm in BURNIN_ALGORITHMS and options.burnin >= options.steps:
        return [None]
    return list(grid)


def _warnings_before(algorithms: Sequence[str], train: DGSplit, names: GroupNames,
                     options: TrainOptions) -> list[str]:
    warnings = []
    matching = [a for a in algorithms if a in FEATURE_MATCHING]
    if matching and not options.adapter_dim:
        warnings.append(f"{', '.join(matching)}: {FEATURE_MATCHING_NOTE}")
    domain_algorithms = [a for a in algorithms if a in DOMAIN_ALGORITHMS]
    n_domains = int(np.count_nonzero(np.bincount(train.domains, minlength=len(names.domains))))
    if domain_algorithms and n_domains < 2:
        warnings.append(f"{', '.join(domain_algorithms)}: train has {n_domains} domain, so "
                        "their terms compare nothing and they train as ERM")
    burnin = [a for a in algorithms if a in BURNIN_ALGORITHMS]
    if burnin and options.burnin >= options.steps:
        warnings.append(f"{', '.join(burnin)}: the burn-in ({options.burnin} steps) covers "
                        f"all {options.steps} steps, so their penalty weight never takes effect "
                        "and nothing is chosen (raise --steps or lower --burnin)")
    return warnings


def _edge_warnings(results: Mapping[str, AlgorithmResult], selection: str) -> list[str]:
    """A warning per algorithm and grid edge that some seeds chose with a val score strictly
    above the neighbouring value's (a tie with the neighbour says nothing about beyond)."""
    warnings = []
    metric = f"val_{selection}"
    for name, result in results.items():
        if len(result.grid) < 2:
            continue
        for edge, index, neighbour in (("smallest", 0, 1), ("largest", -1, -2)):
            value = result.grid[index]
            hits = sum(r.value == value and np.nan_to_num(r.val_curve[index][metric], nan=-1.0)
                       > np.nan_to_num(r.val_curve[neighbour][metric], nan=-1.0)
                       for r in result.runs)
            if hits:
                warnings.append(
                    f"{name}: {result.parameter} = {value:g} is the {edge} value of the grid "
                    f"[{result.grid[0]:g}, {result.grid[-1]:g}] in {hits} of {len(result.runs)} "
                    f"seeds, scoring above its neighbour on val: the best value may lie "
                    f"outside it; widen --grid {name}=...")
    return warnings


def thin_group_warning(counts: np.ndarray, names: Sequence[str]) -> str | None:
    """A warning when some evaluated test groups have fewer than :data:`MIN_GROUP_ROWS` rows."""
    present = counts > 0
    thin = present & (counts < MIN_GROUP_ROWS)
    if not thin.any():
        return None
    fewest = int(np.argmin(np.where(thin, counts, np.iinfo(np.int64).max)))
    return (f"{int(thin.sum())} of {int(present.sum())} test groups have fewer than "
            f"{MIN_GROUP_ROWS} rows (fewest: {names[fewest]}, {int(counts[fewest])}): "
            "worst-group accuracy is noisy")
