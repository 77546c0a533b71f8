"""Taxonomy task: linear-probe accuracy at each level of a class hierarchy (FG-BMK Fig. 2).

A hierarchy file (:func:`featkit.datasets.attributes.read_taxonomy`) names each class's genus,
family, order, ... ; each level relabels the dataset's classes to that level's names
(:func:`probes.labels.build_relabel`) and runs the linear probe of :mod:`featkit.tasks.linear`
on the relabelled splits, so the finest level's numbers are the ``linear_probe`` record's.

The record stores each test image's 0/1 correctness at every level as the per-item scores of
``<level>.top1`` (``per_item``, see :mod:`featkit.tasks.intervals`); with ``ci`` each level's
top-1 also gets a bootstrap interval over the test images. ``<level>.mean_per_class`` (a mean
over classes) gets none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from featkit.errors import FeatkitError
from featkit.tasks import linear
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores
from featkit.tasks.loading import FeatureSource, load_datasets, provenance
from featkit.tasks.registry import TaskInfo, register

INFO = register(TaskInfo(
    name="taxonomy", title="accuracy by taxonomy level", headline=(), columns=(),
    module=__name__,
))
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Settings:
    """``hierarchy``: the CSV file; ``levels``: the levels to probe, fine to coarse (empty:
    all of the file's); ``probe``: the linear probe's settings at every level; ``ci``:
    bootstrap intervals of every level's top-1 over the test images."""

    hierarchy: str = ""
    levels: tuple[str, ...] = ()
    probe: linear.Settings = field(default_factory=linear.Settings)
    ci: Interval | None = None

    def __post_init__(self) -> None:
        if not self.hierarchy:
            raise FeatkitError(f"{INFO.name}: --hierarchy names no file (a CSV such as "
                               "'species,genus,family,order' with one line per class)")
        if self.probe.merge or self.probe.label_map:
            raise FeatkitError(f"{INFO.name}: the hierarchy relabels the classes; --merge and "
                               "--label-map do not apply")
        if self.probe.ci is not None:
            raise FeatkitError(f"{INFO.name}: give the interval as the taxonomy's ci, not its "
                               "probe's")


def run(source: FeatureSource, datasets: Sequence[str], settings: Settings, *,
        progress: bool = True) -> list[dict[str, Any]]:
    """One record per dataset (task ``"taxonomy"``): top-1 and mean per-class accuracy of the
    linear probe at every level, metrics named ``<level>.top1``."""
    from featkit.datasets.attributes import read_taxonomy
    from featkit.results import make_result
    from probes.labels import build_relabel

    loaded = load_datasets(source, list(datasets), SPLITS)
    taxonomy = read_taxonomy(settings.hierarchy)
    levels = list(settings.levels) or list(taxonomy.levels)
    for level in levels:
        taxonomy.level_index(level)
    order = sorted(levels, key=taxonomy.level_index)
    records = []
    for s in loaded:
        rows, metrics, warnings, items = [], {}, [], {}
        for level in order:
            relabel = build_relabel(s.class_names, taxonomy.mapping(s.class_names, level),
                                    f"{settings.hierarchy} ({level})")
            labels = {split: relabel.apply(y) for split, y in s.labels.items()}
            if len(relabel.class_names) < 2:
                raise FeatkitError(f"{settings.hierarchy}: level '{level}' puts every class of "
                                   f"{s.dataset} in one ({relabel.class_names[0]}); nothing to "
                                   "classify")
            fit, result = linear.fit_and_score(s.features, labels, relabel.class_names,
                                               settings.probe, progress=progress)
            rows.append({"level": level, "classes": len(relabel.class_names),
                         "top1": result.top1, "top5": result.test.top5,
                         "mean_per_class": result.test.mean_per_class, "C": result.C,
                         "per_class": result.test.per_class})
            metrics[f"{level}.top1"] = result.top1
            metrics[f"{level}.mean_per_class"] = result.test.mean_per_class
            warnings += [f"{level}: {w}" for w in result.fit.warnings]
            correct = fit.probe.predict(s.features["test"]) == labels["test"]
            items[f"{level}.top1"] = ItemScores.of(correct, s.files["test"].sample_ids)
        extra: dict[str, Any] = {"levels": rows}
        attach_item_scores(extra, items, settings.ci, metrics)
        records.append(make_result(
            INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=metrics,
            settings={"hierarchy": str(settings.hierarchy), "levels": order,
                      "probe": {**settings.probe.probe_options(False),
                                "device": settings.probe.device or "auto"}},
            provenance=provenance([s]), extra=extra, warnings=warnings,
        ))
    return records
