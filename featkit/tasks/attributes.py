"""Attribute probes: what cached features say about attributes beyond the class (FG-BMK Table 2).

Binary attributes (CUB-200-2011's 312, from ``attributes/image_attribute_labels.txt``) get one
multi-label probe per attribute group (e.g. CUB's 15 wing colours), scored by macro-AUROC and
mAP over attributes, per-attribute accuracy and per-group top-1 (:mod:`probes.multilabel`).
Categorical attributes (a manifest's extra columns, e.g. MEGACOIN's ``fgd``) get one linear probe
each, the attribute's values as classes (:mod:`probes.linear`).

Attributes are matched to the cached rows by sample id, read from the dataset root the cache
names (or ``FeatureSource.data_root``), so they need no re-extraction. This module also holds
the attribute lookup the DG task shares (:func:`attribute_columns`).

Intervals (``ci``): binary mode's macro-AUROC, mAP and mean group top-1 are no means over
images: the test images are resampled (with their labels and certainty masks) and the metrics
recomputed with the trained outputs fixed, always over the attributes (and groups) defined on
the test set as given: one left without positives or negatives (or shown values) by a resample
makes the metric undefined there, a one-line error, rather than silently changing the set
averaged over (see :func:`probes.multilabel.multilabel_statistics`). Categorical mode's per-attribute top-1 is a mean
over that attribute's test rows (``per_item``, the per-item bootstrap); ``mean_top1`` (the mean
of the attributes' top-1) is recomputed over resampled test images, an image scoring in every
attribute it has a value of. ``mean_per_class`` gets no interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores, recompute
from featkit.tasks.loading import FeatureSource, Splits, load_datasets, provenance
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_device, check_grid
from probes.defaults import LINEAR_MAX_ITER, LINEAR_NORMALIZATION, NORMALIZATIONS
from probes.multilabel import MULTILABEL_L2_GRID, MULTILABEL_MAX_ITER, MULTILABEL_SELECTION

INFO = register(TaskInfo(
    name="attributes", title="attribute probes", headline=("macro_auroc", "map", "mean_top1"),
    columns=("macro_auroc", "map", "mean_group_top1", "mean_top1"), module=__name__,
))
SPLITS = ("train", "val", "test")
CLASS_KEY = "class"
#: How the recomputed metrics are resampled, as records state it.
BINARY_RESAMPLING = ("test images with their labels and masks; the metric recomputed over "
                     "the attributes (groups) defined on the test set, the trained outputs "
                     "fixed; a resample on which one is undefined is an error")
MEAN_TOP1_RESAMPLING = ("test images; each attribute's top-1 over the resampled images with a "
                        "value of it, then their mean; the probes fixed")


@dataclass(frozen=True)
class Settings:
    """``attributes``: CUB attribute groups (``has_wing_color``) or categorical attribute
    names; empty: all of them. ``min_certainty``: CUB labels with a lower certainty id (1 not
    visible .. 4 definitely) are left out of training and scoring. ``attr_map``: a JSON file
    merging categorical values (:func:`featkit.datasets.attributes.read_attr_map`)."""

    attributes: tuple[str, ...] = ()
    min_certainty: int = 1
    l2_grid: tuple[float, ...] = MULTILABEL_L2_GRID
    max_iter: int = MULTILABEL_MAX_ITER
    normalization: str = LINEAR_NORMALIZATION
    c_grid: tuple[float, ...] | None = None
    linear_max_iter: int = LINEAR_MAX_ITER
    attr_map: str | None = None
    device: str | None = None
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_device(INFO.name, self.device)
        check_grid(INFO.name, "--l2-grid", self.l2_grid)
        check_grid(INFO.name, "--c-grid", self.c_grid)
        if self.normalization not in NORMALIZATIONS:
            raise FeatkitError(f"{INFO.name}: --normalization must be one of "
                               f"{', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.min_certainty not in (1, 2, 3, 4):
            raise FeatkitError(f"{INFO.name}: --min-certainty must be 1, 2, 3 or 4 (CUB's "
                               f"certainty ids), got {self.min_certainty!r}")
        for name, value in (("--max-iter", self.max_iter),
                            ("--linear-max-iter", self.linear_max_iter)):
            if not isinstance(value, int) or value < 1:
                raise FeatkitError(f"{INFO.name}: {name} must be a positive integer, got "
                                   f"{value!r}")


# -- the attribute lookup shared with the DG task ----------------------------------------------


def dataset_root(source: FeatureSource, s: Splits) -> str:
    """Where the attributes are read: ``source.data_root``, else the root the cache names."""
    if source.data_root is not None:
        return str(source.data_root)
    root = s.meta.get("data_root")
    if not root:
        raise FeatkitError(f"{s.files[SPLITS[0]].path} names no dataset root; pass --data-root")
    return str(root)


def apply_attr_map(columns: Mapping[str, Mapping[str, list[str | None]]],
                   attr_map: Mapping[str, Mapping[str, str]], source: str
                   ) -> dict[str, dict[str, list[str | None]]]:
    """Merge attribute values (``pink -> red``) as :func:`probes.labels.build_label_map` merges
    classes, per attribute; a map for every attribute (``*``) applies its entries to each
    attribute that has the value. Names no attribute has are an error naming ``source``."""
    from featkit.datasets.attributes import EVERY_ATTRIBUTE
    from probes.labels import build_label_map

    names = {key for split_columns in columns.values() for key in split_columns}
    unknown = [k for k in attr_map if k != EVERY_ATTRIBUTE and k not in names]
    if unknown:
        raise FeatkitError(f"{source}: no grouped attribute '{unknown[0]}' (attributes: "
                           f"{', '.join(sorted(names))})")
    out = {split: {k: list(v) for k, v in split_columns.items()}
           for split, split_columns in columns.items()}
    used: set[str] = set()
    for key in sorted(names - {CLASS_KEY}):
        vocabulary = sorted({v for split_columns in columns.values()
                             for v in split_columns.get(key, []) if v is not None})
        mapping = dict(attr_map.get(key, {}))
        for old, new in attr_map.get(EVERY_ATTRIBUTE, {}).items():
            if old in vocabulary:
                mapping[old] = new
                used.add(old)
        if not mapping:
            continue
        merge = build_label_map(vocabulary, mapping, f"{source} ({key})")
        index = {v: i for i, v in enumerate(vocabulary)}
        for split_columns in out.values():
            if key in split_columns:
                split_columns[key] = [None if v is None else merge.class_names[
                    int(merge.old_to_new[index[v]])] for v in split_columns[key]]
    unused = [k for k in attr_map.get(EVERY_ATTRIBUTE, {}) if k not in used]
    if unused:
        raise FeatkitError(f"{source}: no grouped attribute has the value '{unused[0]}'")
    return out


def attribute_columns(source: FeatureSource, s: Splits, keys: Sequence[str],
                      attr_map: str | None = None) -> dict[str, dict[str, list[str | None]]]:
    """``columns[split][key]``: each cached row's value of ``key`` (``class``: its class name;
    otherwise the attribute, None where the image has none), after ``attr_map``."""
    from featkit.datasets.attributes import read_attr_map, read_sample_attributes

    attribute_keys = [k for k in dict.fromkeys(keys) if k != CLASS_KEY]
    table = read_sample_attributes(s.dataset, dataset_root(source, s)) if attribute_keys else None
    columns: dict[str, dict[str, list[str | None]]] = {}
    for split, fs in s.files.items():
        names = np.asarray(s.class_names, dtype=object)[s.labels[split]]
        columns[split] = {CLASS_KEY: [str(n) for n in names]}
        for key in attribute_keys:
            columns[split][key] = table.column(key, fs.sample_ids)
    if attr_map is not None:
        columns = apply_attr_map(columns, read_attr_map(attr_map), str(attr_map))
    return columns


# -- the task -------------------------------------------------------------------------------------


def run(source: FeatureSource, dataset: str, settings: Settings | None = None, *,
        progress: bool = True) -> list[dict[str, Any]]:
    """Probe the dataset's attributes: binary (CUB) when the tree has CUB attribute files,
    otherwise the reader's categorical attributes. One record (task ``"attributes"``)."""
    from featkit.datasets.attributes import find_cub_attribute_files

    settings = settings or Settings()
    (s,) = load_datasets(source, [dataset], SPLITS)
    root = dataset_root(source, s)
    if find_cub_attribute_files(root) is not None:
        return [_binary(source, s, root, settings)]
    return [_categorical(source, s, settings, progress)]


def _binary(source: FeatureSource, s: Splits, root: str, settings: Settings) -> dict[str, Any]:
    from featkit.datasets.attributes import CUB_CERTAINTIES, read_cub_attributes
    from featkit.results import make_result
    from probes.multilabel import (
        evaluate_multilabel_probe,
        fit_multilabel_probe,
        multilabel_statistics,
    )

    binary = read_cub_attributes(root)
    groups = list(settings.attributes) or list(binary.group_names)
    columns = np.concatenate([binary.columns_of(g) for g in groups])
    data = {}
    for split, fs in s.files.items():
        rows = binary.rows(fs.sample_ids)
        data[split] = (s.features[split], binary.present[rows][:, columns],
                       binary.certainty[rows][:, columns] >= settings.min_certainty)
    names = [binary.names[c] for c in columns]
    attribute_groups = [binary.groups[c] for c in columns]
    fit = fit_multilabel_probe(data["train"][0], data["train"][1], data["val"][0],
                               data["val"][1], groups=attribute_groups,
                               train_mask=data["train"][2], val_mask=data["val"][2],
                               l2_grid=settings.l2_grid, normalization=settings.normalization,
                               max_iter=settings.max_iter, device=settings.device)
    result = evaluate_multilabel_probe(fit, data["test"][0], data["test"][1], names,
                                       test_mask=data["test"][2])
    extra = {"per_group": result.group_scores, "per_attribute": result.per_attribute_table(),
             "sweep": fit.sweep, "counts": {split: int(len(d[0])) for split, d in data.items()}}
    statistics = multilabel_statistics(attribute_groups, data["test"][1],
                                       data["test"][2])
    recomputed = None
    if settings.ci is not None:
        test_arrays = [fit.scores(data["test"][0]), np.asarray(data["test"][1], dtype=bool),
                       np.asarray(data["test"][2], dtype=bool)]
        recomputed = recompute(test_arrays, statistics, settings.ci, unit="test images",
                               resampling=BINARY_RESAMPLING)
    attach_item_scores(extra, {}, settings.ci, result.metrics(), recomputed=recomputed,
                       resampling=dict.fromkeys(statistics, BINARY_RESAMPLING))
    return make_result(
        INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=result.metrics(),
        settings={
            "mode": "binary", "groups": groups, "min_certainty": settings.min_certainty,
            "certainty_kept": [CUB_CERTAINTIES[c] for c in range(settings.min_certainty, 5)],
            "l2_grid": sorted(settings.l2_grid, reverse=True), "selection": MULTILABEL_SELECTION,
            "normalization": settings.normalization, "max_iter": settings.max_iter,
            "device": settings.device or "auto", "attributes_file": binary.source,
        },
        provenance=provenance([s]), extra=extra, warnings=fit.warnings,
    )


def _categorical(source: FeatureSource, s: Splits, settings: Settings, progress: bool
                 ) -> dict[str, Any]:
    from featkit.datasets.attributes import read_sample_attributes
    from featkit.results import make_result
    from probes.linear import evaluate_linear_probe, fit_linear_probe

    names = list(settings.attributes) or list(
        read_sample_attributes(s.dataset, dataset_root(source, s)).names)
    if not names:
        raise FeatkitError(f"{s.dataset}: the dataset lists no attributes (a manifest needs a "
                           "header such as 'relpath,label,fgd,bgd,env'; CUB needs its "
                           "attributes/ folder)")
    columns = attribute_columns(source, s, names, settings.attr_map)
    per_attribute, metrics, warnings = {}, {}, []
    test_ids = list(s.files["test"].sample_ids)
    items: dict[str, ItemScores] = {}
    correct_columns = []  # per attribute: each test image's 0/1, NaN without a value
    for name in names:
        vocabulary = sorted({v for v in columns["train"][name] if v is not None})
        index = {v: i for i, v in enumerate(vocabulary)}
        split_data, left_out = {}, {}
        for split in SPLITS:
            values = columns[split][name]
            keep = np.asarray([v in index for v in values], dtype=bool)
            left_out[split] = int((~keep).sum())
            split_data[split] = (s.features[split][keep],
                                 np.asarray([index[v] for v in values if v in index]))
        if len(vocabulary) < 2:
            raise FeatkitError(f"attribute '{name}' takes {len(vocabulary)} value in train; a "
                               "probe needs two or more")
        if any(left_out.values()):
            warnings.append(f"{name}: left out rows without a value seen in train "
                            f"({', '.join(f'{k} {v}' for k, v in left_out.items() if v)})")
        fit = fit_linear_probe(*split_data["train"], *split_data["val"], class_names=vocabulary,
                               normalization=settings.normalization,
                               c_grid=None if settings.c_grid is None else list(settings.c_grid),
                               max_iter=settings.linear_max_iter, device=settings.device,
                               progress=progress)
        result = evaluate_linear_probe(fit, *split_data["test"])
        kept = np.asarray([v in index for v in columns["test"][name]], dtype=bool)
        correct = fit.probe.predict(split_data["test"][0]) == split_data["test"][1]
        items[f"{name}.top1"] = ItemScores.of(correct, [i for i, k in zip(test_ids, kept) if k])
        column = np.full(len(kept), np.nan)
        column[kept] = correct
        correct_columns.append(column)
        warnings += [f"{name}: {w}" for w in fit.warnings]
        per_attribute[name] = {"values": vocabulary, "C": fit.C, "top1": result.top1,
                               "mean_per_class": result.test.mean_per_class,
                               "per_value": result.test.per_class,
                               "counts": {k: int(len(v[1])) for k, v in split_data.items()},
                               "sweep": result.sweep_curve()}
        metrics[f"{name}.top1"] = result.top1
        metrics[f"{name}.mean_per_class"] = result.test.mean_per_class
    metrics["mean_top1"] = float(np.mean([a["top1"] for a in per_attribute.values()]))
    extra: dict[str, Any] = {"per_attribute": per_attribute}
    recomputed = None
    if settings.ci is not None:
        recomputed = recompute([np.stack(correct_columns, axis=1)],
                               {"mean_top1": _mean_of_columns}, settings.ci,
                               unit="test images", resampling=MEAN_TOP1_RESAMPLING)
    attach_item_scores(extra, items, settings.ci, metrics, recomputed=recomputed,
                       resampling={"mean_top1": MEAN_TOP1_RESAMPLING})
    return make_result(
        INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=metrics,
        settings={"mode": "categorical", "attributes": names, "attr_map": settings.attr_map,
                  "normalization": settings.normalization,
                  "selection": "val top1 per attribute (ties -> smaller C)",
                  "device": settings.device or "auto"},
        provenance=provenance([s]), extra=extra, warnings=warnings,
    )


def _mean_of_columns(correct: np.ndarray) -> float:
    """The mean over attributes (columns) of each one's accuracy over its non-NaN rows; NaN
    when some attribute has no row (a resample without that attribute's values)."""
    counts = np.count_nonzero(~np.isnan(correct), axis=0)
    if not counts.all():
        return float("nan")
    return float(np.mean(np.nansum(correct, axis=0) / counts))
