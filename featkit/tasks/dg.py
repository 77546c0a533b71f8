"""DG task: domain-generalisation algorithms in the linear-probing setup (MEGACOIN Sec. 7).

Groups are combinations of the class and attributes (``group_by=("class", "bgd")``); GroupDRO
reweights them and worst-group accuracy is their minimum. The invariance terms (V-REx, IRM, EQRM,
CORAL, MMD) compare domains: by default the attributes of ``group_by`` without the class. Each
algorithm runs for every seed with its hyper-parameter chosen on val (worst-group or average
accuracy, as the record states) and reports mean and std over seeds of test average,
worst-group and per-group accuracy (:func:`probes.dg.protocol.dg_probe`).

Attribute generalisation (MEGACOIN Table 10): ``holdout=("env", ("indoor",))`` trains and
chooses on the rows whose ``env`` is not held out and tests on the held-out rows only, so the
evaluated groups never appear in training; ``eval_group_by`` evaluates on groups of another
attribute than the training groups.

Intervals (``ci``) are over the test items, with every seed's trained network held fixed: they
say how much the reported number (the mean over seeds) moves with the test sample, while the
spread over seeds (training noise, the val redraws) is the record's std; mixing the two would
need retraining per resample. ``<algorithm>.average`` is the mean over items of each item's
share of seeds that got it right (``per_item``; 0/1 with one seed), which equals the mean over
seeds of the average accuracy, and gets the per-item bootstrap. ``<algorithm>.worst_group`` is a
minimum over group means: the items are resampled within each evaluated group (sizes kept, so
every group stays present) and the mean over seeds of the worst group's accuracy is recomputed;
all algorithms see the same resamples. A minimum over noisy group means is biased low under
the bootstrap (each resample's worst group is the one its noise lowered most), so the worst-group
interval leans below the estimate; the record's ``resampling`` says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.attributes import CLASS_KEY, attribute_columns
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores, recompute
from featkit.tasks.loading import FeatureSource, load_datasets, provenance
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_choice, check_device, check_positive
from probes.defaults import NORMALIZATIONS
from probes.dg.defaults import (
    ALGORITHMS,
    DG_BURNIN,
    DG_LR,
    DG_NORMALIZATION,
    DG_RESPLIT,
    DG_SEEDS,
    DG_SELECTION,
    DG_STEPS,
    DG_WEIGHT_DECAY,
    DOMAIN_ALGORITHMS,
    MMD_MAX_ROWS,
    SELECTIONS,
)

INFO = register(TaskInfo(
    name="dg", title="domain generalisation",
    headline=tuple(f"{a}.worst_group" for a in ALGORITHMS),
    columns=tuple(f"{a}.{m}" for a in ALGORITHMS for m in ("average", "worst_group")),
    module=__name__,
))
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Settings:
    """The grouping, the algorithms and their optimisation (see :mod:`probes.dg`).

    ``group_by``: keys whose value combinations are the groups (``class`` and attribute names).
    ``domain_by`` None: the attributes of ``group_by``. ``eval_group_by`` None: ``group_by``.
    ``grids``: ``(algorithm, values)`` pairs replacing default grids. ``holdout``:
    ``(attribute, values)`` held out of train and val, the only rows tested. ``seeds``: seeds
    0..n-1. ``adapter_dim``: a trainable linear + ReLU adapter of that width under the head."""

    group_by: tuple[str, ...] = ()
    domain_by: tuple[str, ...] | None = None
    eval_group_by: tuple[str, ...] | None = None
    algorithms: tuple[str, ...] = ALGORITHMS
    seeds: int = DG_SEEDS
    selection: str = DG_SELECTION
    steps: int = DG_STEPS
    lr: float = DG_LR
    weight_decay: float = DG_WEIGHT_DECAY
    burnin: int = DG_BURNIN
    adapter_dim: int | None = None
    mmd_max_rows: int = MMD_MAX_ROWS
    normalization: str = DG_NORMALIZATION
    resplit: bool = DG_RESPLIT
    grids: tuple[tuple[str, tuple[float, ...]], ...] = ()
    holdout: tuple[str, tuple[str, ...]] | None = None
    attr_map: str | None = None
    device: str | None = None
    ci: Interval | None = None

    def __post_init__(self) -> None:
        from probes.dg.protocol import check_grids

        check_device(INFO.name, self.device)
        if not self.group_by:
            raise FeatkitError(f"{INFO.name}: --group-by names no key; e.g. --group-by class,env "
                               "(groups are their value combinations)")
        check_choice(INFO.name, "--selection", self.selection, SELECTIONS)
        check_choice(INFO.name, "--normalization", self.normalization, NORMALIZATIONS)
        check_positive(INFO.name, "--lr", self.lr)
        check_positive(INFO.name, "--weight-decay", self.weight_decay, allow_zero=True)
        for option, value, least in (("--seeds", self.seeds, 1), ("--steps", self.steps, 1),
                                     ("--burnin", self.burnin, 0),
                                     ("--mmd-max-rows", self.mmd_max_rows, 2)):
            if not isinstance(value, int) or value < least:
                raise FeatkitError(f"{INFO.name}: {option} must be an integer >= {least}, "
                                   f"got {value!r}")
        if self.adapter_dim is not None and (not isinstance(self.adapter_dim, int)
                                             or self.adapter_dim < 1):
            raise FeatkitError(f"{INFO.name}: --adapter-dim must be a positive integer, got "
                               f"{self.adapter_dim!r}")
        check_grids(list(self.algorithms), dict(self.grids))
        needs_domains = [a for a in self.algorithms if a in DOMAIN_ALGORITHMS]
        if needs_domains and not self.domain_keys:
            raise FeatkitError(f"{INFO.name}: {', '.join(needs_domains)} compare domains: group "
                               "by an attribute too (--group-by class,ATTR) or pass --domain-by")
        if self.holdout is not None and (self.holdout[0] == CLASS_KEY or not self.holdout[1]):
            raise FeatkitError(f"{INFO.name}: --holdout takes ATTR=value[,value...] of an "
                               f"attribute, got {self.holdout!r}")

    @property
    def domain_keys(self) -> tuple[str, ...]:
        if self.domain_by is not None:
            return tuple(self.domain_by)
        return tuple(k for k in self.group_by if k != CLASS_KEY)

    @property
    def eval_keys(self) -> tuple[str, ...]:
        return tuple(self.eval_group_by) if self.eval_group_by else tuple(self.group_by)

    def train_options(self):
        from probes.dg.train import TrainOptions

        return TrainOptions(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
                            burnin=self.burnin, adapter_dim=self.adapter_dim,
                            mmd_max_rows=self.mmd_max_rows)


def _keep_rows(columns, keys, settings: Settings) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rows with every key's value, minus the held-out rows (train, val) or the others (test)."""
    keep, warnings = {}, []
    for split, by_key in columns.items():
        mask = np.ones(len(by_key[CLASS_KEY]), dtype=bool)
        for key in keys:
            mask &= np.asarray([v is not None for v in by_key[key]], dtype=bool)
        missing = int((~mask).sum())
        if missing:
            warnings.append(f"{split}: {missing} of {len(mask)} rows have no value of "
                            f"{', '.join(k for k in keys if k != CLASS_KEY)} and are left out")
        if settings.holdout is not None:
            attribute, values = settings.holdout
            held = np.asarray([v in values for v in by_key[attribute]], dtype=bool)
            mask &= held if split == "test" else ~held
        keep[split] = mask
    if settings.holdout is not None:
        attribute, values = settings.holdout
        present = {v for by_key in columns.values() for v in by_key[attribute]}
        unknown = [v for v in values if v not in present]
        if unknown:
            raise FeatkitError(f"{INFO.name}: --holdout {attribute}={unknown[0]}: no image has "
                               f"that value (values: {', '.join(sorted(map(str, present - {None})))})")
    return keep, warnings


def run(source: FeatureSource, dataset: str, settings: Settings, *,
        save_predictions: str | os.PathLike | None = None, progress: bool = True
        ) -> list[dict[str, Any]]:
    """Run the DG algorithms on one dataset's cached features; one record (task ``"dg"``).
    ``save_predictions``: an ``.npz`` of the test rows' ids, labels, evaluated groups and every
    algorithm's predictions (``seeds x rows``), from which the record's numbers follow."""
    from featkit.results import make_result
    from probes.dg.groups import encode_groups
    from probes.dg.protocol import DGSplit, GroupNames, dg_probe

    (s,) = load_datasets(source, [dataset], SPLITS)
    keys = list(dict.fromkeys([*settings.group_by, *settings.domain_keys, *settings.eval_keys,
                               *([settings.holdout[0]] if settings.holdout else [])]))
    columns = attribute_columns(source, s, keys, settings.attr_map)
    keep, warnings = _keep_rows(columns, keys, settings)
    kept = {split: {k: [v for v, m in zip(by_key[k], keep[split]) if m] for k in keys}
            for split, by_key in columns.items()}
    groups = encode_groups(kept, settings.group_by)
    domains = encode_groups(kept, settings.domain_keys or (CLASS_KEY,))
    eval_groups = encode_groups(kept, settings.eval_keys)
    splits = {split: DGSplit(s.features[split][keep[split]], s.labels[split][keep[split]],
                             groups.ids[split], domains.ids[split], eval_groups.ids[split])
              for split in SPLITS}
    names = GroupNames(tuple(s.class_names), groups.names, domains.names, eval_groups.names)
    result = dg_probe(splits["train"], splits["val"], splits["test"], names=names,
                      algorithms=settings.algorithms, seeds=settings.seeds,
                      grids=dict(settings.grids), selection=settings.selection,
                      options=settings.train_options(), normalization=settings.normalization,
                      resplit=settings.resplit, device=settings.device, progress=progress)
    test_counts = eval_groups.counts("test")
    extra: dict[str, Any] = {
        "algorithms": {a: r.summary(eval_groups.names) for a, r in result.algorithms.items()},
        "groups": {
            "train_groups": list(groups.names),
            "train_counts": groups.counts("train").tolist(),
            "domains": list(domains.names),
            "evaluated": [n for n, c in zip(eval_groups.names, test_counts) if c],
            "test_counts": [int(c) for c in test_counts if c],
        },
        "counts": {split: len(part) for split, part in splits.items()},
    }
    test_ids = np.asarray(s.files["test"].sample_ids, dtype=object)[keep["test"]]
    _attach_intervals(extra, result, test_ids, settings.ci)
    if save_predictions is not None:
        extra["predictions_file"] = str(_save(save_predictions, result, test_ids))
    record_settings = {
        **result.settings,
        "group_by": list(settings.group_by), "domain_by": list(settings.domain_keys),
        "eval_group_by": list(settings.eval_keys),
        "holdout": None if settings.holdout is None else {
            "attribute": settings.holdout[0], "values": list(settings.holdout[1])},
        "attr_map": settings.attr_map, "device": settings.device or "auto",
    }
    return [make_result(INFO.name, model=s.model, dataset=s.dataset, features=s.kind,
                        metrics=result.metrics(), settings=record_settings,
                        provenance=provenance([s]), extra=extra,
                        warnings=[*warnings, *result.warnings])]


def _resampling(seeds: int) -> str:
    return (f"test items within each evaluated group (sizes kept); the mean over the {seeds} "
            "seeds of the worst group's accuracy recomputed, each seed's network fixed; a "
            "percentile bootstrap of a minimum is biased low (resampling noise lowers the "
            "minimum), so the interval sits below the worst group's accuracy more than above")


def _attach_intervals(extra: dict[str, Any], result, test_ids: Sequence[str],
                      interval: Interval | None) -> None:
    """``per_item`` of each algorithm's average accuracy and, with ``interval``, the ``ci``
    (worst-group recomputed over items resampled within groups; see the module notes)."""
    from probes.dg.groups import mean_worst_group

    correct = {name: (p == result.test_labels[None, :]).T
               for name, p in result.predictions().items()}  # items x seeds
    seeds = len(result.settings["seeds"])
    unit = "test items" if seeds == 1 else f"test items (share of the {seeds} seeds right)"
    items = {f"{name}.average": ItemScores.of(c[:, 0] if seeds == 1 else c.mean(axis=1),
                                              test_ids, unit=unit)
             for name, c in correct.items()}
    names = list(correct)
    resampling = {f"{name}.worst_group": _resampling(seeds) for name in names}
    recomputed = None
    if interval is not None:
        def worst_of(position: int):
            return lambda groups, *columns: mean_worst_group(columns[position], groups)

        statistics = {f"{name}.worst_group": worst_of(i) for i, name in enumerate(names)}
        recomputed = recompute([result.test_eval_groups, *correct.values()], statistics,
                               interval, unit="test items", resampling=resampling,
                               strata=result.test_eval_groups)
    attach_item_scores(extra, items, interval, result.metrics(), recomputed=recomputed,
                       resampling=resampling)


def _save(path: str | os.PathLike, result, test_ids: Sequence[str]) -> Path:
    """The test predictions as ``.npz``: ``sample_ids``, ``labels``, ``groups`` (evaluated
    group ids), ``group_names``, ``class_names``, ``algorithms`` and ``pred_<algorithm>``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    predictions = result.predictions()
    arrays = {f"pred_{name}": p for name, p in predictions.items()}
    with path.open("wb") as handle:  # a file object: numpy adds no .npz suffix
        np.savez(handle, sample_ids=np.asarray(test_ids, dtype=str), labels=result.test_labels,
                 groups=result.test_eval_groups, group_names=np.asarray(result.names.eval_groups),
                 class_names=np.asarray(result.names.classes),
                 algorithms=np.asarray(list(predictions)),
                 seeds=np.asarray(result.settings["seeds"]), **arrays)
    return path
