"""Label spaces: merge several datasets into one (namespaced class names, per-dataset id
offsets), merge classes within one dataset from a name mapping (e.g. MEGACOIN's
pink -> red), and relabel classes to a coarser level with new names (species -> genus). Pure
functions; the CLI reads the mapping file and passes its name as ``source``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from featkit.errors import FeatkitError, closest

NAMESPACE_SEPARATOR = "/"


@dataclass(frozen=True)
class LabelSpace:
    """A union of datasets' classes: dataset ``i`` owns merged ids
    ``offsets[i] .. offsets[i] + sizes[i] - 1``, named ``"<dataset>/<class>"``."""

    datasets: tuple[str, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _index(self, dataset: str) -> int:
        try:
            return self.datasets.index(dataset)
        except ValueError:
            raise FeatkitError(
                f"dataset {dataset!r} is not in the merged label space "
                f"({', '.join(self.datasets)})"
            ) from None

    def offset(self, dataset: str) -> int:
        return self.offsets[self._index(dataset)]

    def class_range(self, dataset: str) -> range:
        i = self._index(dataset)
        return range(self.offsets[i], self.offsets[i] + self.sizes[i])

    def to_merged(self, dataset: str, labels: np.ndarray) -> np.ndarray:
        """Shift one dataset's labels into the merged id space."""
        i = self._index(dataset)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.sizes[i]):
            raise FeatkitError(
                f"labels of {dataset!r} must lie in [0, {self.sizes[i]}); "
                f"got [{labels.min()}, {labels.max()}]"
            )
        return labels + self.offsets[i]

    def dataset_of(self, merged_labels: np.ndarray) -> np.ndarray:
        """Index into ``datasets`` of each merged label."""
        ends = np.cumsum(self.sizes)
        return np.searchsorted(ends, np.asarray(merged_labels), side="right")


def build_label_space(parts: Sequence[tuple[str, Sequence[str]]]) -> LabelSpace:
    """The merged space of ``[(dataset_name, class_names), ...]`` in the given order."""
    if not parts:
        raise FeatkitError("merging needs at least one dataset")
    names = [name for name, _ in parts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FeatkitError(f"dataset(s) listed twice for merging: {', '.join(duplicates)}")
    bad = [n for n in names if not n or NAMESPACE_SEPARATOR in n]
    if bad:
        raise FeatkitError(
            f"dataset names used as namespaces must be non-empty and free of "
            f"{NAMESPACE_SEPARATOR!r}: {bad}"
        )
    offsets, sizes, merged = [], [], []
    for name, classes in parts:
        offsets.append(len(merged))
        sizes.append(len(classes))
        merged.extend(f"{name}{NAMESPACE_SEPARATOR}{c}" for c in classes)
    return LabelSpace(tuple(names), tuple(offsets), tuple(sizes), tuple(merged))


def merge_label_spaces(
    parts: Sequence[tuple[str, np.ndarray, Sequence[str]]],
) -> tuple[LabelSpace, list[np.ndarray]]:
    """Merge ``[(dataset_name, labels, class_names), ...]``: returns the label space and each
    part's labels shifted by its dataset's offset."""
    space = build_label_space([(name, classes) for name, _, classes in parts])
    return space, [space.to_merged(name, labels) for name, labels, _ in parts]


@dataclass(frozen=True)
class FeatureSource:
    """What produced one dataset's features; merged probes need these to agree."""

    dataset: str
    model: str
    kind: str
    dim: int


def check_same_features(sources: Sequence[FeatureSource]) -> None:
    """Raise a FeatkitError unless all datasets' features come from one model, kind and width."""
    for field_name in ("model", "kind", "dim"):
        values = {getattr(s, field_name) for s in sources}
        if len(values) > 1:
            listing = ", ".join(f"{s.dataset}: {getattr(s, field_name)}" for s in sources)
            raise FeatkitError(
                f"cannot merge datasets whose features differ in {field_name} ({listing}); "
                f"extract all of them with the same model and --features kind"
            )


@dataclass(frozen=True)
class LabelMap:
    """A merge of classes within one dataset: old id -> new id, and the new class names."""

    class_names: tuple[str, ...]
    old_to_new: np.ndarray
    merged: dict[str, tuple[str, ...]]

    def apply(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.old_to_new)):
            raise FeatkitError(
                f"labels must lie in [0, {len(self.old_to_new)}) to apply the label map"
            )
        return self.old_to_new[labels]


def build_label_map(
    class_names: Sequence[str], mapping: Mapping[str, str], source: str = "label map"
) -> LabelMap:
    """Merge classes by name: ``mapping[old] = target``, both existing class names.

    Unmapped classes keep their own name; the new class list is the old one without the
    classes mapped away, in the old order. Unknown names, non-string entries and chains
    (a target that is itself mapped elsewhere) are errors naming ``source``.
    """
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise FeatkitError(
            f"{source}: a label map must be a JSON object of class name -> class name, "
            'e.g. {"pink": "red"}'
        )
    names = list(class_names)
    known = set(names)
    unknown = [n for n in list(mapping) + list(mapping.values()) if n not in known]
    if unknown:
        unique = list(dict.fromkeys(unknown))
        hints = "; ".join(f"{n!r}{closest(n, names)}" for n in unique)
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise FeatkitError(
            f"{source}: unknown class name(s): {hints}. Valid names: {shown}"
        )
    chained = [f"{k} -> {v} -> {mapping[v]}" for k, v in mapping.items()
               if v in mapping and mapping[v] != v and k != v]
    if chained:
        raise FeatkitError(
            f"{source}: chained mappings ({'; '.join(chained)}); map each class to its "
            "final class directly"
        )
    target = [mapping.get(n, n) for n in names]
    new_names = [n for n, t in zip(names, target) if t == n]
    new_index = {n: i for i, n in enumerate(new_names)}
    old_to_new = np.asarray([new_index[t] for t in target], dtype=np.int64)
    merged = {
        n: tuple(old for old, t in zip(names, target) if t == n)
        for n in new_names
        if sum(t == n for t in target) > 1
    }
    return LabelMap(tuple(new_names), old_to_new, merged)


def build_relabel(
    class_names: Sequence[str], mapping: Mapping[str, str], source: str = "hierarchy"
) -> LabelMap:
    """Relabel every class to a new name, e.g. species -> genus: ``mapping[old] = new`` where
    the new names need not be existing classes (unlike :func:`build_label_map`). Every class
    must be mapped; the new classes are listed in the order they first appear along the old
    class list. Missing classes and non-string names are errors naming ``source``."""
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
    ):
        raise FeatkitError(f"{source}: a relabelling must map class names to non-empty names")
    names = list(class_names)
    missing = [n for n in names if n not in mapping]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FeatkitError(f"{source}: {len(missing)} of {len(names)} classes have no new name "
                           f"({shown})")
    target = [mapping[n] for n in names]
    new_names = list(dict.fromkeys(target))
    new_index = {n: i for i, n in enumerate(new_names)}
    old_to_new = np.asarray([new_index[t] for t in target], dtype=np.int64)
    merged = {
        n: tuple(old for old, t in zip(names, target) if t == n)
        for n in new_names
        if target.count(n) > 1
    }
    return LabelMap(tuple(new_names), old_to_new, merged)


def apply_label_map(
    labels: np.ndarray,
    class_names: Sequence[str],
    mapping: Mapping[str, str],
    source: str = "label map",
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Convenience: ``(new_labels, new_class_names)`` for one split."""
    label_map = build_label_map(class_names, mapping, source)
    return label_map.apply(labels), label_map.class_names


def merged_vs_single(
    single: Mapping[str, float], merged: Mapping[str, float]
) -> tuple[dict[str, dict[str, float]], float]:
    """Per dataset ``{single, merged, drop = single - merged}`` and the mean drop (fractions),
    as in FG-BMK's cross meta-category comparison (Fig. 8)."""
    if set(single) != set(merged):
        raise ValueError(f"datasets differ: {sorted(single)} vs {sorted(merged)}")
    rows = {
        name: {"single": float(single[name]), "merged": float(merged[name]),
               "drop": float(single[name]) - float(merged[name])}
        for name in single
    }
    mean_drop = float(np.mean([r["drop"] for r in rows.values()])) if rows else float("nan")
    return rows, mean_drop
