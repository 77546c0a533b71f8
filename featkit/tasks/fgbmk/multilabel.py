"""Multi-label linear probe (``multilabel_probe``): the corrected protocol for FG-BMK's
multi-label datasets (SkinCon, Wine), whose manifest lines list several labels.

One logistic output per class, trained by L-BFGS with the L2 strength chosen on val
(:mod:`probes.multilabel`), scored once on test by macro-AUROC and mAP over classes, and by the
share of test images whose best-scored class is one of theirs. The label sets come from the
dataset's reader (matched to the cached rows by sample id), so they need no re-extraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.fgbmk.common import multi_label_sets, rows_sets
from featkit.tasks.loading import FeatureSource, load_datasets, provenance
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_device, check_grid
from probes.defaults import NORMALIZATIONS
from probes.multilabel import (
    MULTILABEL_L2_GRID,
    MULTILABEL_MAX_ITER,
    MULTILABEL_NORMALIZATION,
    MULTILABEL_SELECTION,
)

INFO = register(TaskInfo(
    name="multilabel_probe", title="multi-label linear probe", headline=("macro_auroc", "map"),
    columns=("macro_auroc", "map", "mean_group_top1"), module=__name__,
))
SPLITS = ("train", "val", "test")
GROUP = "labels"


@dataclass(frozen=True)
class Settings:
    """:func:`probes.multilabel.fit_multilabel_probe`'s protocol; ``device`` None: CUDA when
    present."""

    l2_grid: tuple[float, ...] = MULTILABEL_L2_GRID
    max_iter: int = MULTILABEL_MAX_ITER
    normalization: str = MULTILABEL_NORMALIZATION
    device: str | None = None

    def __post_init__(self) -> None:
        check_device(INFO.name, self.device)
        check_grid(INFO.name, "l2_grid", self.l2_grid)
        if self.normalization not in NORMALIZATIONS:
            raise FeatkitError(f"{INFO.name}: normalization must be one of "
                               f"{', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise FeatkitError(f"{INFO.name}: max_iter must be a positive integer, "
                               f"got {self.max_iter!r}")


def run(source: FeatureSource, dataset: str, settings: Settings | None = None, *,
        progress: bool = True) -> dict[str, Any]:
    """Fit the multi-label probe on train (strength chosen on val), score test once, and
    build the record (task ``multilabel_probe``)."""
    from featkit.results import make_result
    from probes.multilabel import evaluate_multilabel_probe, fit_multilabel_probe

    settings = settings or Settings()
    (s,) = load_datasets(source, [dataset], SPLITS)
    sets = multi_label_sets(dataset, source.data_root or s.meta.get("data_root"))
    if sets is None:
        raise FeatkitError(f"{dataset} lists one label per image; the multi-label probe needs "
                           "a manifest whose labels list several classes (e.g. '1 10 12')")
    classes = len(s.class_names)
    targets = {}
    for split, fs in s.files.items():
        matrix = np.zeros((len(fs), classes), dtype=bool)
        for row, members in enumerate(rows_sets(sets, fs.sample_ids, s.labels[split])):
            matrix[row, list(members)] = True
        targets[split] = matrix
    fit = fit_multilabel_probe(s.features["train"], targets["train"], s.features["val"],
                               targets["val"], groups=[GROUP] * classes,
                               l2_grid=settings.l2_grid, normalization=settings.normalization,
                               max_iter=settings.max_iter, device=settings.device)
    result = evaluate_multilabel_probe(fit, s.features["test"], targets["test"],
                                       list(s.class_names))
    return make_result(
        INFO.name, model=s.model, dataset=dataset, features=s.kind, metrics=result.metrics(),
        settings={"l2_grid": sorted(settings.l2_grid, reverse=True),
                  "selection": MULTILABEL_SELECTION, "normalization": settings.normalization,
                  "max_iter": settings.max_iter, "device": settings.device or "auto",
                  "labels": "the manifest's label sets, one output per class"},
        provenance=provenance([s]),
        extra={"per_class": result.per_attribute_table(), "sweep": fit.sweep,
               "counts": {split: int(len(t)) for split, t in targets.items()},
               "multi_label_rows": {split: int((t.sum(1) > 1).sum())
                                    for split, t in targets.items()}},
        warnings=list(fit.warnings),
    )
