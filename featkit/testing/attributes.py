"""Attribute, hierarchy and pair files next to the tiny datasets of :mod:`featkit.testing.datasets`.

- :func:`make_cub_attributes` adds CUB-200-2011's attribute files (``attributes.txt`` next to the
  ``CUB_200_2011`` folder, ``attributes/image_attribute_labels.txt`` and ``certainties.txt``) to a
  tree written by :func:`~featkit.testing.datasets.make_cub`;
- :func:`make_attribute_manifest` writes a manifest whose header names attribute columns
  (MEGACOIN's ``fgd,bgd,env``), optionally with a spurious attribute: one that follows the class
  in train and val but not in test;
- :func:`write_taxonomy` and :func:`write_pairs` write a hierarchy CSV and a pairs file.

Each returns what a reader must find, so tests compare against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.testing.datasets import GeneratedDataset, make_manifest

__all__ = [
    "CUB_GROUPS",
    "CubAttributesTruth",
    "make_attribute_manifest",
    "make_cub_attributes",
    "write_pairs",
    "write_taxonomy",
]

#: A few of CUB's attribute groups and their values, in the official file's style.
CUB_GROUPS: dict[str, tuple[str, ...]] = {
    "has_bill_shape": ("curved_(up_or_down)", "dagger", "hooked", "needle"),
    "has_wing_color": ("blue", "brown", "iridescent", "purple", "black", "white"),
    "has_size": ("large_(16_-_32_in)", "small_(5_-_9_in)", "very_small_(3_-_5_in)"),
}


@dataclass
class CubAttributesTruth:
    """What :func:`make_cub_attributes` wrote: attribute ``names`` (``group::value``) in id
    order, and ``present`` / ``certainty`` (``n_images x n_attributes``) by the image order of
    ``images.txt``, whose paths are ``sample_ids``."""

    names: list[str]
    sample_ids: list[str]
    present: np.ndarray
    certainty: np.ndarray
    labels_path: Path
    names_path: Path


def _cub_folder(dataset: GeneratedDataset) -> Path:
    nested = dataset.root / "CUB_200_2011"
    return nested if (nested / "images.txt").exists() else dataset.root


def make_cub_attributes(
    dataset: GeneratedDataset,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    seed: int = 0,
    names_next_to_folder: bool = True,
    extra_field_every: int = 0,
) -> CubAttributesTruth:
    """Write CUB's attribute files for a generated CUB tree. Each image of class ``c`` shows
    value ``(c + g) % len(values)`` of group ``g`` with probability 0.9 and each other value with
    probability 0.1, so the attributes are learnable from class-dependent images; certainties
    are drawn from 1..4. ``names_next_to_folder``: ``attributes.txt`` beside ``CUB_200_2011/``
    as in the official archive (else inside it). ``extra_field_every`` > 0 gives every n-th
    label line a sixth field, as a few lines of the official file have."""
    groups = dict(groups or CUB_GROUPS)
    folder = _cub_folder(dataset)
    images = [line.split(" ", 1) for line in (folder / "images.txt").read_text().splitlines()
              if line.strip()]
    labels = {key: int(value) - 1 for key, value in (
        line.split(" ", 1) for line in (folder / "image_class_labels.txt").read_text().splitlines()
        if line.strip())}
    names = [f"{group}::{value}" for group, values in groups.items() for value in values]
    rng = np.random.default_rng(seed)
    present = np.zeros((len(images), len(names)), dtype=bool)
    certainty = rng.integers(1, 5, size=present.shape).astype(np.int8)
    for i, (image_id, _) in enumerate(images):
        column = 0
        for g, values in enumerate(groups.values()):
            typical = (labels[image_id] + g) % len(values)
            draws = rng.random(len(values))
            for v in range(len(values)):
                present[i, column + v] = draws[v] < (0.9 if v == typical else 0.1)
            column += len(values)
    names_path = (folder.parent if names_next_to_folder else folder) / "attributes.txt"
    names_path.write_text("".join(f"{a + 1} {name}\n" for a, name in enumerate(names)))
    (folder / "attributes").mkdir(exist_ok=True)
    (folder / "attributes" / "certainties.txt").write_text(
        "1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    lines, count = [], 0
    for i, (image_id, _) in enumerate(images):
        for a in range(len(names)):
            count += 1
            extra = " 0" if extra_field_every and count % extra_field_every == 0 else ""
            lines.append(f"{image_id} {a + 1} {int(present[i, a])} {certainty[i, a]} "
                         f"{rng.uniform(1, 20):.3f}{extra}\n")
    labels_path = folder / "attributes" / "image_attribute_labels.txt"
    labels_path.write_text("".join(lines))
    return CubAttributesTruth(names, [path for _, path in images], present, certainty,
                              labels_path, names_path)


def make_attribute_manifest(
    root: str | os.PathLike,
    attributes: Mapping[str, Sequence[str]],
    *,
    n_classes: int = 3,
    train_per_class: int = 4,
    val_per_class: int = 2,
    test_per_class: int = 2,
    spurious: str | None = None,
    seed: int = 0,
    image_size: int = 16,
) -> tuple[GeneratedDataset, dict[str, dict[str, str]]]:
    """A manifest (see :func:`~featkit.testing.datasets.make_manifest`) with a header
    ``relpath,label,<attribute>,...``; each attribute's value is drawn per image from its
    ``attributes`` values. The ``spurious`` attribute instead takes value ``label % n_values``
    in train and val (it predicts the class there) and a random value in test. Returns the
    dataset and ``{sample_id: {attribute: value}}``."""
    dataset = make_manifest(root, n_classes=n_classes, train_per_class=train_per_class,
                            val_per_class=val_per_class, test_per_class=test_per_class,
                            image_size=image_size, seed=seed, header=True)
    rng = np.random.default_rng(seed)
    names = list(attributes)
    truth: dict[str, dict[str, str]] = {}
    for split, rows in dataset.splits.items():
        lines = ["relpath,label," + ",".join(names)]
        for relpath, label in rows:
            values = {}
            for name in names:
                options = list(attributes[name])
                if name == spurious and split != "test":
                    values[name] = options[label % len(options)]
                else:
                    values[name] = options[int(rng.integers(len(options)))]
            truth[relpath] = values
            lines.append(f"{relpath},{label}," + ",".join(values[n] for n in names))
        (Path(root) / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return dataset, truth


def write_taxonomy(
    path: str | os.PathLike,
    class_names: Sequence[str],
    levels: Sequence[str] = ("species", "genus", "family"),
    fan_in: int = 2,
) -> dict[str, tuple[str, ...]]:
    """A hierarchy CSV over ``class_names``: at each coarser level ``fan_in`` consecutive
    names of the level below share one parent (``genus_0``, ``family_0``, ...). Returns
    ``{class: names at every level}``."""
    table = {}
    for i, name in enumerate(class_names):
        row, index = [name], i
        for level in levels[1:]:
            index //= fan_in
            row.append(f"{level}_{index}")
        table[name] = tuple(row)
    Path(path).write_text(",".join(levels) + "\n"
                          + "".join(",".join(row) + "\n" for row in table.values()))
    return table


def write_pairs(
    path: str | os.PathLike,
    pairs: Sequence[tuple[str, str, bool]],
    *,
    header: bool = True,
) -> Path:
    """A pairs file of ``image_a,image_b,same`` lines (``same`` as 1 or 0)."""
    path = Path(path)
    lines = ["image_a,image_b,same"] if header else []
    lines += [f"{a},{b},{int(bool(same))}" for a, b, same in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path
