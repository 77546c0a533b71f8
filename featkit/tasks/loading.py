"""The one loader every task uses: cached splits of one or more datasets, checked once.

A :class:`FeatureSource` says which cached features to read (model, kind, weights, adapter,
cache root). :func:`load_datasets` reads the splits an experiment needs, checks that every split
of a dataset lists the same classes (once, here, for every task), applies a label map and, for
merged runs, checks that the datasets' features are comparable. :func:`merge_splits` then builds
the merged label space.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit.errors import FeatkitError

if TYPE_CHECKING:
    from featkit.featureset import FeatureSet
    from probes.labels import LabelSpace


@dataclass(frozen=True)
class FeatureSource:
    """Which cached features a task reads: ``model``'s ``features`` kind, extracted with
    ``weights`` and ``adapter`` (local paths, or None), under ``cache_dir``. With ``data_root``
    (the root given to ``featkit extract``) the file whose key matches the data there is read;
    without it the newest matching file, with a note in :attr:`FeatureSet.notes` naming any
    others."""

    model: str
    features: str = "visual"
    weights: str | None = None
    adapter: str | None = None
    cache_dir: str | os.PathLike | None = None
    data_root: str | os.PathLike | None = None

    def load(self, dataset: str, split: str) -> FeatureSet:
        """One cached split (:func:`featkit.load`), refused when it is empty or holds
        non-finite features: no task scores those silently."""
        import featkit

        fs = featkit.load(self.model, dataset, split, self.features, cache_dir=self.cache_dir,
                          weights=self.weights, adapter=self.adapter, data_root=self.data_root)
        check_usable(fs, dataset, split)
        return fs


def check_usable(fs: FeatureSet, dataset: str, split: str) -> None:
    """A one-line error naming the file, split and kind when a split is empty or has rows
    with NaN or infinite features."""
    where = f"{fs.path}: {dataset}/{split} '{fs.kind}' features"
    if len(fs) == 0:
        raise FeatkitError(f"{where} have no rows (an empty split); check the dataset's "
                           f"{split} list or re-extract")
    bad = int(np.count_nonzero(~np.isfinite(fs.features.sum(axis=1, dtype=np.float64))))
    if bad:
        raise FeatkitError(f"{where}: {bad} of {len(fs)} rows are not finite (NaN or inf); "
                           f"re-extract with 'featkit extract --overwrite' or drop those images")


@dataclass
class Splits:
    """One dataset's features, labels and class names per split, after any label map."""

    dataset: str
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: tuple[str, ...]
    meta: dict[str, Any]
    model: str
    identity: str  # model id plus weights identity: what must match across merged datasets
    kind: str
    files: dict[str, FeatureSet]

    def provenance(self) -> dict[str, Any]:
        return dict(self.meta)

    @property
    def notes(self) -> list[str]:
        """How the cache files were chosen, when that needs saying (see ``FeatureSet.notes``):
        every task puts these into its record's warnings."""
        return notes_of(*self.files.values())


@dataclass
class Merged:
    """Several datasets' splits in one label space; ``owner[split]`` is each row's dataset
    index into ``space.datasets``."""

    space: LabelSpace
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    owner: dict[str, np.ndarray]


def notes_of(*feature_sets: FeatureSet | None) -> list[str]:
    """The files' notes, each once, in order."""
    return list(dict.fromkeys(n for fs in feature_sets if fs is not None for n in fs.notes))


def read_label_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a label-map JSON file (its contents are checked by :mod:`probes.labels`)."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"label map {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FeatkitError(f"label map {path} is not valid JSON ({err})") from err


def check_same_classes(sets: Mapping[str, FeatureSet], dataset: str) -> tuple[str, ...]:
    """The class names every split lists; splits that disagree are a one-line error."""
    (first_split, first), *rest = sets.items()
    for split, fs in rest:
        if list(fs.class_names) != list(first.class_names):
            raise FeatkitError(
                f"{dataset}: the {split} and {first_split} cache files list different classes; "
                f"re-extract both ({fs.path}, {first.path})"
            )
    return tuple(first.class_names)


def load_splits(
    source: FeatureSource,
    dataset: str,
    splits: Sequence[str],
    *,
    label_map: tuple[Mapping[str, str], str] | None = None,
) -> Splits:
    """The cached ``splits`` of ``dataset``, class lists checked, ``label_map`` (mapping and
    its source name) applied to the labels."""
    from probes.labels import build_label_map

    sets = {split: source.load(dataset, split) for split in splits}
    class_names = check_same_classes(sets, dataset)
    labels = {split: fs.labels for split, fs in sets.items()}
    if label_map is not None:
        mapping, name = label_map
        merge = build_label_map(class_names, dict(mapping), name)
        labels = {split: merge.apply(y) for split, y in labels.items()}
        class_names = merge.class_names
    first = sets[splits[0]]
    model_id = first.model or source.model
    weights_id = first.meta.get("weights")
    identity = (f"{model_id} (weights {weights_id})"
                if weights_id not in (None, "", "none") else model_id)
    return Splits(
        dataset=dataset,
        features={split: fs.features for split, fs in sets.items()},
        labels=labels,
        class_names=tuple(class_names),
        meta=dict(first.meta),
        model=model_id,
        identity=identity,
        kind=first.kind,
        files=sets,
    )


def load_datasets(
    source: FeatureSource,
    datasets: Sequence[str],
    splits: Sequence[str],
    *,
    merge: bool = False,
    label_map: str | os.PathLike | None = None,
) -> list[Splits]:
    """:func:`load_splits` for each dataset; with ``merge`` the datasets must be two or more
    and their features comparable (same model, weights, kind and dimension)."""
    from probes.labels import FeatureSource as LabelFeatureSource
    from probes.labels import check_same_features

    if not datasets:
        raise FeatkitError("--dataset names no dataset")
    if merge and len(datasets) < 2:
        raise FeatkitError("--merge needs two or more datasets, e.g. --dataset cub,cars,aircraft")
    if source.data_root is not None and len(datasets) > 1:
        raise FeatkitError("--data-root names one dataset's root; run several datasets without it "
                           "(the newest matching cache file of each is read, with a note)")
    if label_map is not None and len(datasets) > 1:
        raise FeatkitError(
            "--label-map merges classes within one dataset; run it with a single --dataset"
        )
    mapping = (read_label_map(label_map), str(label_map)) if label_map is not None else None
    loaded = [load_splits(source, d, splits, label_map=mapping) for d in datasets]
    if merge:
        check_same_features([
            LabelFeatureSource(s.dataset, s.identity, s.kind, int(s.features[splits[0]].shape[1]))
            for s in loaded
        ])
    return loaded


def merge_splits(loaded: Sequence[Splits], splits: Sequence[str]) -> Merged:
    """Concatenate each split across datasets in the merged label space (classes named
    ``dataset/class``)."""
    from probes.labels import build_label_space

    space = build_label_space([(s.dataset, s.class_names) for s in loaded])
    features, labels, owner = {}, {}, {}
    for split in splits:
        features[split] = np.concatenate([s.features[split] for s in loaded])
        labels[split] = np.concatenate(
            [space.to_merged(s.dataset, s.labels[split]) for s in loaded])
        owner[split] = np.concatenate(
            [np.full(len(s.labels[split]), i) for i, s in enumerate(loaded)])
    return Merged(space, features, labels, owner)


def provenance(loaded: Sequence[Splits]) -> dict[str, Any]:
    """The first dataset's provenance; for several datasets, each one's under ``datasets``."""
    result = loaded[0].provenance()
    if len(loaded) > 1:
        result["datasets"] = {s.dataset: s.meta for s in loaded}
    return result


def label_space_record(space: LabelSpace) -> dict[str, Any]:
    return {"datasets": list(space.datasets), "offsets": list(space.offsets),
            "sizes": list(space.sizes)}


def label_map_extra(label_map: str | os.PathLike | None, s: Splits) -> dict[str, Any]:
    """The ``label_map`` entry of a record probed after a label map (file and new classes)."""
    if label_map is None:
        return {}
    return {"label_map": {"file": str(label_map), "class_names": list(s.class_names)}}
