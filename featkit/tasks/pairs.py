"""Pairs task: do two images show the same object (TWIN)? Cosine similarity of cached
features, ROC-AUC, accuracy at a threshold chosen on val pairs, TAR at a false-accept rate.

Pairs come from a file (``image_a,image_b,same``; sample ids of the dataset, any split) or are
mined from a split's labels: positives two images of one class, negatives each image's most
similar other-class image under ``mining_model``'s features (default: the probed model). The
threshold is chosen on ``val_pairs`` or, without that file, on pairs mined from the val split.

Intervals (``ci``): accuracy is a mean over test pairs (0/1 at the val threshold; ``per_item``)
and gets the per-item bootstrap. ROC-AUC and TAR at FAR are no means: test pairs are resampled
within the same and within the different pairs (so every resample has both, in the test set's
numbers, and FAR's k stays put) and each statistic recomputed; the val threshold stays fixed, so
the interval covers the test pairs' sampling only, not the choice of the threshold.

Limitations the records state: pairs share images (one image in many pairs, as mined pairs are
built), yet they are resampled as independent pairs, so when images repeat across pairs the
intervals are optimistic (too narrow). With fewer than ``1 / FAR`` different test pairs, FAR's
k is 0 on every resample: TAR's threshold is the resample's highest different-pair score, and the
record warns that its interval says nothing about the FAR asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from featkit.errors import FeatkitError
from featkit.tasks.intervals import Interval, ItemScores, attach_item_scores, recompute
from featkit.tasks.loading import FeatureSource, load_datasets, provenance
from featkit.tasks.registry import TaskInfo, register
from featkit.tasks.settings import check_choice
from probes.pairs import PAIRS_FAR, PAIRS_PER_IMAGE, PAIRS_SEED

INFO = register(TaskInfo(
    name="pairs", title="same-object pairs", headline=("roc_auc",),
    columns=("roc_auc", "accuracy", "tar_at_far"), module=__name__,
))
SPLITS = ("train", "val", "test")
#: How ROC-AUC and TAR at FAR are resampled, as the record states it.
RESAMPLING = ("test pairs, within the same and within the different pairs; the statistic "
              "recomputed, the val threshold fixed; pairs are resampled as independent, so "
              "the interval is optimistic (too narrow) when images repeat across pairs")


@dataclass(frozen=True)
class Settings:
    """``pairs`` / ``val_pairs``: pairs files (None: mine pairs from ``split`` /
    ``val_split``); ``mining_model``: whose features pick the hardest negatives (None: the
    probed model, same feature kind)."""

    pairs: str | None = None
    val_pairs: str | None = None
    split: str = "test"
    val_split: str = "val"
    mining_model: str | None = None
    per_image: int = PAIRS_PER_IMAGE
    far: float = PAIRS_FAR
    seed: int = PAIRS_SEED
    ci: Interval | None = None

    def __post_init__(self) -> None:
        check_choice(INFO.name, "--split", self.split, SPLITS)
        check_choice(INFO.name, "--val-split", self.val_split, SPLITS)
        if self.pairs is None and self.split == self.val_split:
            raise FeatkitError(f"{INFO.name}: mined test and val pairs come from the same split "
                               f"({self.split}); choose another --val-split")
        if not isinstance(self.per_image, int) or self.per_image < 1:
            raise FeatkitError(f"{INFO.name}: --per-image must be a positive integer, got "
                               f"{self.per_image!r}")
        if not 0 < self.far < 1:
            raise FeatkitError(f"{INFO.name}: --far must lie in (0, 1), got {self.far!r}")


def _rows_of(pairs, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    unknown = [sid for sid in (*pairs.first, *pairs.second) if sid not in index]
    if unknown:
        raise FeatkitError(f"{pairs.source}: {len(set(unknown))} image ids are not in the cached "
                           f"features of any split (e.g. {unknown[0]}); ids are the dataset's "
                           "sample ids, as 'featkit info' lists them")
    return (np.asarray([index[s] for s in pairs.first]),
            np.asarray([index[s] for s in pairs.second]))


def run(source: FeatureSource, dataset: str, settings: Settings | None = None
        ) -> list[dict[str, Any]]:
    """Score the pairs; one record (task ``"pairs"``)."""
    from featkit.datasets.pairs import read_pairs
    from featkit.results import make_result
    from probes.pairs import cosine_scores, mine_pairs, pair_statistics, pair_verification

    settings = settings or Settings()
    (s,) = load_datasets(source, [dataset], SPLITS)
    features = np.concatenate([s.features[split] for split in SPLITS])
    ids = [sid for split in SPLITS for sid in s.files[split].sample_ids]
    index = {sid: i for i, sid in enumerate(ids)}
    offsets = dict(zip(SPLITS, np.cumsum([0] + [len(s.labels[x]) for x in SPLITS[:-1]])))
    mining = None
    if settings.pairs is None or settings.val_pairs is None:
        mining = FeatureSource(settings.mining_model or source.model, source.features,
                               cache_dir=source.cache_dir, data_root=source.data_root,
                               **({} if settings.mining_model else
                                  {"weights": source.weights, "adapter": source.adapter}))

    def pairs_of(path: str | None, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        if path is not None:
            listed = read_pairs(path)
            first, second = _rows_of(listed, index)
            return first, second, listed.same, f"file {path}"
        mining_fs = mining.load(dataset, split)
        if list(mining_fs.sample_ids) != list(s.files[split].sample_ids):
            raise FeatkitError(f"the mining model's {split} features list other images than "
                               f"{source.model}'s; extract both from the same dataset root")
        mined = mine_pairs(s.labels[split], mining_fs.features, per_image=settings.per_image,
                           seed=settings.seed)
        return (mined.first + offsets[split], mined.second + offsets[split], mined.same,
                f"mined from {split} (negatives by {mining.model})")

    test = pairs_of(settings.pairs, settings.split)
    val = pairs_of(settings.val_pairs, settings.val_split)
    test_scores = cosine_scores(features[test[0]], features[test[1]])
    result = pair_verification(cosine_scores(features[val[0]], features[val[1]]), val[2],
                               test_scores, test[2], far=settings.far)
    extra: dict[str, Any] = {"counts": result.counts}
    pair_ids = [f"{ids[a]}|{ids[b]}" for a, b in zip(test[0], test[1])]
    items = {"accuracy": ItemScores.of(result.test_correct, pair_ids, unit="test pairs")}
    recomputed = None
    if settings.ci is not None:
        recomputed = recompute([test_scores, np.asarray(test[2], bool)],
                               pair_statistics(settings.far), settings.ci, unit="test pairs",
                               resampling=RESAMPLING, strata=np.asarray(test[2], bool))
    attach_item_scores(extra, items, settings.ci, result.metrics(), recomputed=recomputed,
                       resampling=dict.fromkeys(("roc_auc", "tar_at_far"), RESAMPLING))
    warnings = list(result.warnings)
    if settings.ci is not None:
        warnings += _interval_warnings(result.counts["test_different"], settings.far)
    return [make_result(
        INFO.name, model=s.model, dataset=s.dataset, features=s.kind, metrics=result.metrics(),
        settings={**result.settings(), "test_pairs": test[3], "val_pairs": val[3],
                  "per_image": settings.per_image, "seed": settings.seed},
        provenance=provenance([s]), extra=extra, warnings=warnings,
    )]


def _interval_warnings(different: int, far: float) -> list[str]:
    """The warning of a TAR at FAR interval that cannot resolve ``far``: with fewer than
    ``1 / far`` different test pairs every resample's threshold is its highest different-pair
    score."""
    if different * far >= 1:
        return []
    return [f"tar_at_far interval: {different} different test pairs are fewer than 1 / FAR = "
            f"{int(np.ceil(1 / far))}, so every resample's threshold is its highest "
            "different-pair score (FAR 0); the interval says nothing about FAR = "
            f"{far:g}"]
