"""Perturbation task: linear-probe accuracy under PGD, swept over the budget eps.

The probe is the linear task's (C chosen on val, refit on train + val, the same defaults), or a
saved one. ``space="feature"`` attacks the cached features without any clamping (eps in raw
feature units, or with ``eps_rel`` fractions of the mean feature norm); ``space="image"``
attacks the pixels in [0, 1] with torchattacks through the model and recomputes the features.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks import linear
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores
from featkit.tasks.loading import FeatureSource, load_splits, notes_of
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import (
    check_choice,
    check_device,
    check_positive,
    check_positive_int,
)
from probes.defaults import PGD_NORM, PGD_STEPS, PGD_TARGET

if TYPE_CHECKING:
    from featkit.featureset import FeatureSet
    from probes.linear import LinearProbe, LinearProbeFit
    from probes.perturb import PerturbSweep

INFO = register(TaskInfo(
    name="perturb", title="PGD perturbation", headline=(), columns=("clean_top1",),
    module=__name__,
))

#: Default budgets: relative to the mean feature norm in feature space, pixels in image space.
DEFAULT_FEATURE_EPS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
DEFAULT_IMAGE_EPS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
#: Recomputed clean features may differ this much (relative) from the cache before a warning.
CONSISTENCY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Settings:
    """``eps`` None: :data:`DEFAULT_IMAGE_EPS` in image space, :data:`DEFAULT_FEATURE_EPS`
    (with ``eps_rel`` implied) in feature space. ``alpha`` None: ``2.5 * eps / steps``.
    ``probe`` a saved probe to attack instead of training one; ``normalization`` and ``c_grid``
    apply to a probe trained here, with the linear task's other defaults."""

    space: str = "feature"
    norm: str = PGD_NORM
    eps: tuple[float, ...] | None = None
    eps_rel: bool = False
    steps: int = PGD_STEPS
    alpha: float | None = None
    random_start: bool = False
    target: str = PGD_TARGET
    seed: int = 0
    split: str = "test"
    probe: str | None = None
    normalization: str = linear.Settings.normalization
    c_grid: tuple[float, ...] | None = None
    batch_size: int = 32
    data_root: str | None = None
    device: str = "auto"
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_device(INFO.name, self.device)
        check_choice(INFO.name, "--space", self.space, ("feature", "image"))
        check_choice(INFO.name, "--norm", self.norm, ("linf", "l2"))
        check_choice(INFO.name, "--target", self.target, ("none", "least-likely", "random"))
        if self.space == "image" and self.eps_rel:
            raise FeatkitError("--eps-rel applies to --space feature; image budgets are in pixel "
                               "units (e.g. --eps 0,2/255,8/255)")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise FeatkitError(f"--steps must be non-negative, got {self.steps}")
        if self.eps is not None:
            if not self.eps:
                raise FeatkitError("--eps names no value")
            for value in self.eps:
                check_positive(INFO.name, "--eps", value, allow_zero=True)
        if self.alpha is not None:
            check_positive(INFO.name, "--alpha", self.alpha)
        check_positive_int(INFO.name, "--batch-size", self.batch_size)

    def budgets(self) -> tuple[list[float], bool]:
        """The budgets and whether they are relative (defaults applied)."""
        if self.eps is not None:
            return [float(e) for e in self.eps], self.eps_rel
        if self.space == "image":
            return list(DEFAULT_IMAGE_EPS), False
        return list(DEFAULT_FEATURE_EPS), True

    def probe_settings(self) -> linear.Settings:
        """The linear task's settings for a probe trained here."""
        return linear.Settings(normalization=self.normalization, c_grid=self.c_grid,
                               seed=self.seed,
                               device=None if self.device == "auto" else self.device)


@dataclass
class Outcome:
    record: dict[str, Any]
    sweep: PerturbSweep
    probe: LinearProbe = field(repr=False)


def parse_budgets(text: str, option: str = "--eps") -> list[float]:
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


def train_probe(source: FeatureSource, dataset: str, settings: linear.Settings, *,
                progress: bool = True) -> tuple[LinearProbeFit, list[str]]:
    """The linear task's probe on train (C chosen on val), refit as that task refits, and the
    notes of the files it read."""
    from probes.linear import fit_linear_probe

    splits = load_splits(source, dataset, ("train", "val"))
    fit = fit_linear_probe(splits.features["train"], splits.labels["train"],
                           splits.features["val"], splits.labels["val"],
                           class_names=splits.class_names, **settings.probe_options(progress))
    return fit, splits.notes


def trained_probe_info(fit: LinearProbeFit) -> dict[str, Any]:
    return {"source": "trained", "protocol": "featkit probe linear", **fit.settings(),
            "val_sweep": fit.sweep_curve()}


def load_probe(path: str | os.PathLike, test: FeatureSet) -> tuple[LinearProbe, dict[str, Any]]:
    """A saved probe, checked against the features it will attack."""
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


def run(source: FeatureSource, dataset: str, settings: Settings | None = None, *,
        fit: LinearProbeFit | None = None, save_probe: str | os.PathLike | None = None,
        progress: bool = True) -> Outcome:
    """Train (or load, or take ``fit``), run the eps sweep and build the record (task
    ``"perturb"``; metrics ``clean_top1`` and ``sweep``)."""
    from featkit.results import make_result
    from probes.perturb import eps_sweep

    settings = settings or Settings()
    values, eps_rel = settings.budgets()
    test = source.load(dataset, settings.split)
    train_notes: list[str] = []
    if settings.probe is not None:
        head, probe_info = load_probe(settings.probe, test)
    else:
        if fit is None:
            fit, train_notes = train_probe(source, dataset, settings.probe_settings(),
                                           progress=progress)
        head, probe_info = fit.probe, trained_probe_info(fit)
        if list(head.class_names) != list(test.class_names):
            raise FeatkitError(f"{dataset}: the {settings.split} cache file lists other classes "
                               f"than train/val; re-extract it ({test.path})")
    if save_probe:
        probe_info["saved_to"] = str(head.save(save_probe))

    attack = dict(norm=settings.norm, steps=settings.steps, alpha=settings.alpha,
                  random_start=settings.random_start, target=settings.target,
                  seed=settings.seed, progress=progress)
    extra: dict[str, Any] = {"probe": probe_info}
    if settings.space == "feature":
        device = None if settings.device == "auto" else settings.device
        sweep = eps_sweep(head, test.features, test.labels, values, eps_rel=eps_rel,
                          device=device, **attack)
        image_settings: dict[str, Any] = {}
    else:
        sweep, extra["consistency"], image_settings = _image_sweep(
            source, dataset, test, head, values, settings, attack)
    record_settings = {**sweep.settings(), "split": settings.split,
                       "alpha_given": settings.alpha, "probe_normalization": head.normalization,
                       **image_settings}
    extra["counts"] = {settings.split: sweep.n}
    attach_item_scores(extra, sweep_items(sweep, test), settings.ci, _interval_estimates(sweep))
    warnings = [*notes_of(test), *train_notes,
                *(f"probe: {w}" for w in (fit.warnings if fit is not None else ()))]
    record = make_result(INFO.name, model=test.model or source.model, dataset=dataset,
                         features=test.kind, metrics=sweep.metrics(), settings=record_settings,
                         provenance=dict(test.meta), extra=extra, warnings=warnings)
    return Outcome(record, sweep, head)


def sweep_items(sweep: PerturbSweep, test: FeatureSet) -> dict[str, ItemScores]:
    """0/1 correctness per attacked item: ``clean_top1``, and ``sweep[i].top1`` for the i-th
    budget of ``metrics.sweep``."""
    items = {"clean_top1": ItemScores.of(sweep.clean_predictions == test.labels,
                                         test.sample_ids)}
    for i, point in enumerate(sweep.points):
        items[f"sweep[{i}].top1"] = ItemScores.of(point.predictions == test.labels,
                                                  test.sample_ids)
    return items


def _interval_estimates(sweep: PerturbSweep) -> dict[str, float]:
    return {"clean_top1": sweep.clean_top1,
            **{f"sweep[{i}].top1": p.top1 for i, p in enumerate(sweep.points)}}


def _image_sweep(source: FeatureSource, dataset: str, test: FeatureSet, probe: LinearProbe,
                 values: list[float], settings: Settings, attack: dict[str, Any]):
    """Attack the pixels through the model; returns (sweep, consistency, record settings)."""
    import extractors
    from featkit._device import resolve_device
    from featkit.datasets import open_dataset
    from featkit.datasets.decoded import DecodedImages
    from probes.image_attack import image_eps_sweep

    device = resolve_device(settings.device)
    extractor = extractors.load_extractor(source.model, weights=source.weights, device=device,
                                          adapter=source.adapter)
    cached = test.meta.get("weights")
    if cached and extractor.weights_identity != cached:
        raise FeatkitError(f"the loaded {source.model} has weights {extractor.weights_identity} "
                           f"but the cached features came from {cached}; pass the same --weights")
    root = settings.data_root or test.meta.get("data_root")
    images = DecodedImages(open_dataset(dataset, root), test.sample_ids, extractor.transform)
    if not np.array_equal(images.labels(), test.labels):
        raise FeatkitError(f"the labels of {dataset} at {root} differ from the cached ones; "
                           f"re-extract or pass the right --data-root")
    mean, std = extractor.pixel_normalization()
    sweep, clean = image_eps_sweep(
        extractor.differentiable_features(source.features), probe, images, test.labels, values,
        mean=mean, std=std, batch_size=settings.batch_size, device=device, **attack,
    )
    diff = np.abs(clean - test.features)
    scale = float(np.abs(test.features).max()) or 1.0
    consistency = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_diff": float(diff.max()) / scale if diff.size else 0.0,
        "cached_clean_top1": float(np.mean(probe.predict(test.features) == test.labels)),
        "note": "clean features recomputed through the differentiable path vs the cache",
    }
    if consistency["max_rel_diff"] > CONSISTENCY_TOLERANCE:
        print(f"featkit: warning: recomputed clean features differ from the cache by up to "
              f"{consistency['max_rel_diff']:.2g} (relative); the cache may come from another "
              f"precision or device", file=sys.stderr)
    image_settings = {"mean": list(mean), "std": list(std), "device": device,
                      "batch_size": settings.batch_size, "data_root": str(root)}
    return sweep, consistency, image_settings
