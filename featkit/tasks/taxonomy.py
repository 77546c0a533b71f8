"""Taxonomy task: linear-probe accuracy at each level of a class hierarchy (FG-BMK Fig. 2).

A hierarchy file (:func:`featkit.datasets.attributes.read_taxonomy`) names each class's genus,
family, order, ... ; each level relabels the dataset's classes to that level's names
(:func:`probes.labels.build_relabel`) and runs the linear probe of :mod:`featkit.tasks.linear`
on the relabelled splits, so the finest level's numbers are the ``linear_probe`` record's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from featkit.errors import FeatkitError
from featkit.tasks import linear
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
    all of the file's); ``probe``: the linear probe's settings at every level."""

    hierarchy: str = ""
    levels: tuple[str, ...] = ()
    probe: linear.Settings = field(default_factory=linear.Settings)

    def __post_init__(self) -> None:
        if not self.hierarchy:
            raise FeatkitError(f"{INFO.name}: --hierarchy names no file (a CSV such as "
                               "'species,genus,family,order' with one line per class)")
        if self.probe.merge or self.probe.label_map:
            raise FeatkitError(f"{INFO.name}: the hierarchy relabels the classes; --merge and "
                               "--label-map do not apply")


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
        rows, metrics, warnings = [], {}, []
        for level in order:
            relabel = build_relabel(s.class_names, taxonomy.mapping(s.class_names, level),
                                    f"{settings.hierarchy} ({level})")
            labels = {split: relabel.apply(y) for split, y in s.labels.items()}
            if len(relabel.class_names) < 2:
                raise FeatkitError(f"{settings.hierarchy}: level '{level}' puts every class of "
                                   f"{s.dataset} in one ({relabel.class_names[0]}); nothing to "
                                   "classify")
            _, result = linear.fit_and_score(s.features, labels, relabel.class_names,
                                             settings.probe, progress=progress)
            rows.append({"level": level, "classes": len(relabel.class_names),
                         "top1": result.top1, "top5": result.test.top5,
                         "mean_per_class": result.test.mean_per_class, "C": result.C,
                         "per_class": result.test.per_class})
            metrics[f"{level}.top1"] = result.top1
            metrics[f"{level}.mean_per_class"] = result.test.mean_per_class
            warnings += [f"{level}: {w}" for w in result.fit.warnings]
        records.append(make_result(
            INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=metrics,
            settings={"hierarchy": str(settings.hierarchy), "levels": order,
                      "probe": {**settings.probe.probe_options(False),
                                "device": settings.probe.device or "auto"}},
            provenance=provenance([s]), extra={"levels": rows}, warnings=warnings,
        ))
    return records
