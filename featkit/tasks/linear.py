"""Linear-probe task: logistic regression on cached features, C swept on val, refit, one test.

One record per dataset, or with ``merge`` one record of a probe trained on the union of the
datasets (classes ``dataset/class``) that reports each dataset's top-1 next to its own
single-dataset probe (FG-BMK Fig. 8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    check_choice,
    check_device,
    check_grid,
    check_positive,
    check_positive_int,
)
from probes.defaults import (
    LINEAR_MAX_ITER,
    LINEAR_NORMALIZATION,
    LINEAR_REFIT_ON_VAL,
    LINEAR_SEED,
    LINEAR_TOL,
    NORMALIZATIONS,
)

if TYPE_CHECKING:
    from probes.linear import LinearProbeFit, LinearProbeResult

INFO = register(TaskInfo(
    name="linear_probe", title="linear probe", headline=("top1",),
    columns=("top1", "top5", "mean_per_class"), module=__name__, shift_priority=0,
))
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Settings(ClassifierSettings):
    """The probe protocol (see :func:`probes.linear.fit_linear_probe`) and the label space.

    ``c_grid`` None: the default grid for the features' scale. ``seed`` is recorded; the fit
    itself has no randomness. ``device`` None: CUDA when present."""

    normalization: str = LINEAR_NORMALIZATION
    c_grid: tuple[float, ...] | None = None
    refit_on_val: bool = LINEAR_REFIT_ON_VAL
    tol: float = LINEAR_TOL
    max_iter: int = LINEAR_MAX_ITER
    seed: int = LINEAR_SEED
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_device(INFO.name, self.device)
        check_choice(INFO.name, "--normalization", self.normalization, NORMALIZATIONS)
        check_grid(INFO.name, "--c-grid", self.c_grid)
        check_positive(INFO.name, "--tol", self.tol)
        check_positive_int(INFO.name, "--max-iter", self.max_iter)

    def probe_options(self, progress: bool) -> dict[str, Any]:
        """Keyword arguments of :func:`probes.linear.fit_linear_probe`."""
        return dict(normalization=self.normalization,
                    c_grid=None if self.c_grid is None else list(self.c_grid),
                    refit_on_val=self.refit_on_val, tol=self.tol, max_iter=self.max_iter,
                    seed=self.seed, device=self.device, progress=progress)


@dataclass
class Outcome:
    """The records, and each trained probe fit (by dataset, or ``"merged"``)."""

    records: list[dict[str, Any]]
    fits: dict[str, LinearProbeFit] = field(default_factory=dict)


def default_probe_path(json_path: str | os.PathLike | None, source: FeatureSource,
                       datasets: Sequence[str], label_map: str | None) -> Path:
    """Where a trained probe goes when not told: next to the JSON record as
    ``<name>.probe.npz``, else ``<cache>/_probes/<model>/<datasets>-<features>.npz``."""
    if json_path:
        path = Path(json_path)
        return path.with_name(path.stem + ".probe.npz")
    from featkit.cache import cache_root, slug

    suffix = f"-{Path(label_map).stem}" if label_map else ""
    name = f"{'+'.join(datasets)}-{source.features}{suffix}.npz"
    return cache_root(source.cache_dir) / "_probes" / slug(source.model) / name


def fit_and_score(features, labels, class_names, settings: Settings, *, progress: bool = True
                  ) -> tuple[LinearProbeFit, LinearProbeResult]:
    """Fit on train (C chosen on val) and score once on test."""
    from probes.linear import evaluate_linear_probe, fit_linear_probe

    fit = fit_linear_probe(features["train"], labels["train"], features["val"], labels["val"],
                           class_names=class_names, **settings.probe_options(progress))
    return fit, evaluate_linear_probe(fit, features["test"], labels["test"])


def _record_settings(result: LinearProbeResult, settings: Settings) -> dict[str, Any]:
    return {
        **result.settings(),
        "splits": {split: split for split in SPLITS},
        **settings.label_space_fields(),
    }


def _counts(result: LinearProbeResult) -> dict[str, int]:
    return {"train": result.fit.n_train, "val": result.fit.n_val,
            "test": result.test.n_samples}


def run(source: FeatureSource, datasets: Sequence[str], settings: Settings | None = None, *,
        save_probe: str | os.PathLike | None = None, progress: bool = True) -> Outcome:
    """Run the linear probe and build its records. Each trained probe is saved to
    ``save_probe`` (for several unmerged datasets the dataset name is appended)."""
    settings = settings or Settings()
    loaded = load_datasets(source, list(datasets), SPLITS, merge=settings.merge,
                           label_map=settings.label_map)
    if not settings.merge:
        outcome = Outcome([])
        for s in loaded:
            path = Path(save_probe) if save_probe else None
            if path is not None and len(loaded) > 1:
                path = path.with_name(f"{path.stem}-{s.dataset}{path.suffix}")
            outcome.fits[s.dataset], record = _single(s, settings, path, progress)
            outcome.records.append(record)
        return outcome
    return _merged(loaded, settings, save_probe, progress)


def _single(s: Splits, settings: Settings, path: Path | None, progress: bool):
    from featkit.results import make_result

    fit, result = fit_and_score(s.features, s.labels, s.class_names, settings,
                                progress=progress)
    extra = {
        "sweep": result.sweep_curve(),
        "per_class": result.test.per_class,
        "counts": _counts(result),
        **label_map_extra(settings.label_map, s),
    }
    if path is not None:
        extra["probe_file"] = str(fit.probe.save(path))
    correct = fit.probe.predict(s.features["test"]) == s.labels["test"]
    items = {"top1": ItemScores.of(correct, s.files["test"].sample_ids)}
    attach_item_scores(extra, items, settings.ci, result.metrics())
    record = make_result(INFO.name, model=s.model, dataset=s.dataset, features=s.kind,
                         metrics=result.metrics(), settings=_record_settings(result, settings),
                         provenance=provenance([s]), extra=extra,
                         warnings=[*s.notes, *fit.warnings])
    return fit, record


def _merged(loaded: Sequence[Splits], settings: Settings, save_probe, progress: bool) -> Outcome:
    from featkit.results import make_result
    from probes.classification import score_classification
    from probes.labels import merged_vs_single

    single, single_c, warnings = {}, {}, []
    for s in loaded:
        single_fit, result = fit_and_score(s.features, s.labels, s.class_names, settings,
                                           progress=progress)
        single[s.dataset], single_c[s.dataset] = result.top1, result.C
        warnings += [f"{s.dataset} alone: {w}" for w in single_fit.warnings]
    merged = merge_splits(loaded, SPLITS)
    fit, result = fit_and_score(merged.features, merged.labels, merged.space.class_names,
                                settings, progress=progress)
    scores = fit.probe.predict_scores(merged.features["test"])
    owner, test_labels = merged.owner["test"], merged.labels["test"]
    per_source = {
        s.dataset: score_classification(scores[owner == i], test_labels[owner == i],
                                        merged.space.class_names).top1
        for i, s in enumerate(loaded)
    }
    per_dataset, mean_drop = merged_vs_single(single, per_source)
    extra = {
        "per_dataset": per_dataset,
        "mean_drop": mean_drop,
        "single_C": single_c,
        "label_space": label_space_record(merged.space),
        "sweep": result.sweep_curve(),
        "per_class": result.test.per_class,
        "counts": _counts(result),
    }
    if save_probe:
        extra["probe_file"] = str(fit.probe.save(save_probe))
    correct = scores.argmax(axis=1) == test_labels
    items = {"top1": merged_items(correct, [(s.dataset, s.files["test"].sample_ids)
                                            for s in loaded])}
    attach_item_scores(extra, items, settings.ci, result.metrics())
    record = make_result(
        INFO.name, model=loaded[0].model, dataset=",".join(s.dataset for s in loaded),
        features=loaded[0].kind, metrics=result.metrics(),
        settings=_record_settings(result, settings), provenance=provenance(loaded), extra=extra,
        warnings=[*(n for s in loaded for n in s.notes), *fit.warnings, *warnings],
    )
    return Outcome([record], {"merged": fit})
