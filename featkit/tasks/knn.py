"""kNN task: DINOv2's weighted k-NN on cached features (cosine, votes exp(sim / T)).

The neighbours come from train + val (kNN tunes nothing), or train only; with ``merge`` one bank
of all datasets in the merged label space, each dataset's top-1 next to its own bank's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores, merged_items
from featkit.tasks.loading import (
    FeatureSource,
    Splits,
    label_map_extra,
    label_space_record,
    load_datasets,
    merge_splits,
    provenance,
)
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import (
    ClassifierSettings,
    check_device,
    check_positive,
    check_positive_int,
)
from probes.defaults import KNN_KS, KNN_TEMPERATURE

INFO = register(TaskInfo(
    name="knn", title="kNN probe", headline=("top1",), columns=("top1", "top5", "mean_per_class"),
    module=__name__, shift_priority=1,
))


@dataclass(frozen=True)
class Settings(ClassifierSettings):
    """``primary_k`` None: 20 if among ``ks``, else the largest k."""

    ks: tuple[int, ...] = KNN_KS
    primary_k: int | None = None
    temperature: float = KNN_TEMPERATURE
    train_only: bool = False
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_device(INFO.name, self.device)
        if not self.ks:
            raise FeatkitError("knn: --k names no k")
        for k in self.ks:
            check_positive_int(INFO.name, "--k", k)
        check_positive(INFO.name, "--temperature", self.temperature)

    @property
    def bank_splits(self) -> tuple[str, ...]:
        return ("train",) if self.train_only else ("train", "val")

    def probe_options(self, progress: bool) -> dict[str, Any]:
        return dict(ks=list(self.ks), primary_k=self.primary_k, temperature=self.temperature,
                    device=self.device, progress=progress)


def _bank(settings: Settings, features, labels) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([features[s] for s in settings.bank_splits]),
            np.concatenate([labels[s] for s in settings.bank_splits]))


def _record_settings(result, settings: Settings) -> dict[str, Any]:
    return {**result.settings(), "bank": "+".join(settings.bank_splits), "test_split": "test",
            **settings.label_space_fields()}


def run(source: FeatureSource, datasets: Sequence[str], settings: Settings | None = None, *,
        progress: bool = True) -> list[dict[str, Any]]:
    """Run the weighted kNN probe and build its records (task ``"knn"``): one per dataset,
    or one merged record."""
    settings = settings or Settings()
    splits = (*settings.bank_splits, "test")
    loaded = load_datasets(source, list(datasets), splits, merge=settings.merge,
                           label_map=settings.label_map)
    if not settings.merge:
        return [_single(s, settings, progress) for s in loaded]
    return [_merged(loaded, splits, settings, progress)]


def _single(s: Splits, settings: Settings, progress: bool) -> dict[str, Any]:
    from featkit.results import make_result
    from probes.knn import knn_scores, score_knn

    train_x, train_y = _bank(settings, s.features, s.labels)
    test_y = s.labels["test"]
    scores = knn_scores(train_x, train_y, s.features["test"], list(settings.ks),
                        len(s.class_names), temperature=settings.temperature,
                        device=settings.device, progress=progress)
    result = score_knn(scores, test_y, s.class_names, primary_k=settings.primary_k,
                       temperature=settings.temperature, n_train=len(train_y))
    primary = result.per_k[result.primary_k]
    extra = {"per_class": primary.per_class,
             "counts": {"bank": len(train_y), "test": primary.n_samples},
             **label_map_extra(settings.label_map, s)}
    correct = scores[result.primary_k].argmax(axis=1) == test_y
    attach_item_scores(extra, {"top1": ItemScores.of(correct, s.files["test"].sample_ids)},
                       settings.ci, result.metrics())
    return make_result(
        INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=result.metrics(),
        settings=_record_settings(result, settings), provenance=provenance([s]), extra=extra,
        warnings=s.notes,
    )


def _merged(loaded: Sequence[Splits], splits, settings: Settings, progress: bool):
    from featkit.results import make_result
    from probes.classification import score_classification
    from probes.knn import knn_probe, knn_scores, score_knn
    from probes.labels import merged_vs_single

    single = {}
    for s in loaded:
        train_x, train_y = _bank(settings, s.features, s.labels)
        single[s.dataset] = knn_probe(train_x, train_y, s.features["test"], s.labels["test"],
                                      class_names=s.class_names,
                                      **settings.probe_options(progress)).top1
    merged = merge_splits(loaded, splits)
    train_x, train_y = _bank(settings, merged.features, merged.labels)
    scores = knn_scores(train_x, train_y, merged.features["test"], list(settings.ks),
                        merged.space.num_classes, temperature=settings.temperature,
                        device=settings.device, progress=progress)
    test_labels, owner = merged.labels["test"], merged.owner["test"]
    result = score_knn(scores, test_labels, merged.space.class_names,
                       primary_k=settings.primary_k, temperature=settings.temperature,
                       n_train=len(train_y))
    votes = scores[result.primary_k]
    per_source = {
        s.dataset: score_classification(votes[owner == i], test_labels[owner == i],
                                        merged.space.class_names).top1
        for i, s in enumerate(loaded)
    }
    per_dataset, mean_drop = merged_vs_single(single, per_source)
    primary = result.per_k[result.primary_k]
    extra = {
        "per_dataset": per_dataset,
        "mean_drop": mean_drop,
        "label_space": label_space_record(merged.space),
        "per_class": primary.per_class,
        "counts": {"bank": len(train_y), "test": primary.n_samples},
    }
    items = {"top1": merged_items(votes.argmax(axis=1) == test_labels,
                                  [(s.dataset, s.files["test"].sample_ids) for s in loaded])}
    attach_item_scores(extra, items, settings.ci, result.metrics())
    return make_result(
        INFO.name, model=loaded[0].model, dataset=",".join(s.dataset for s in loaded),
        features=loaded[0].kind, metrics=result.metrics(),
        settings=_record_settings(result, settings), provenance=provenance(loaded), extra=extra,
        warnings=[n for s in loaded for n in s.notes],
    )
