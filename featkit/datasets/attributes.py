"""What a dataset says about each image beyond its class: attributes, and class hierarchies.

- :func:`read_sample_attributes`: categorical attributes per sample id, from the reader's
  :attr:`Sample.attributes` (a manifest's extra columns, e.g. MEGACOIN's ``fgd,bgd,env``) and, for
  a CUB-200-2011 tree, one categorical column per CUB attribute group (see below).
- :func:`read_cub_attributes`: CUB's 312 binary attributes (``attributes/image_attribute_labels.txt``
  and ``attributes.txt``) as a present/certainty matrix over the images of ``images.txt``.
- :func:`read_attr_map`: a ``--attr-map`` JSON file merging attribute values (MEGACOIN's
  pink -> red); the merge itself is :func:`probes.labels.build_label_map`, applied by the tasks.
- :func:`read_taxonomy`: a hierarchy file, class -> genus -> family -> order (any levels).

Attributes are matched to cached features by sample id, so they need no re-extraction.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.datasets.base import DatasetFormatError
from featkit.errors import FeatkitError, MissingDataError, closest

#: The value of a CUB attribute group's categorical column when no value of it is present.
NO_VALUE = "none"
#: Separator of several present values in a CUB group's categorical column (``black+white``).
VALUE_JOIN = "+"
#: CUB's certainty ids: 1 not visible, 2 guessing, 3 probably, 4 definitely (0: no line).
CUB_CERTAINTIES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
_NUMBERED = re.compile(r"^\d+\.(.+)$")


# -- CUB's binary attributes ---------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryAttributes:
    """Binary attributes of a set of images: ``present[i, a]`` says whether image
    ``sample_ids[i]`` shows attribute ``names[a]`` (``"has_wing_color::blue"``), with the
    annotator's ``certainty[i, a]`` (1-4, 0 where the file has no line). ``groups[a]`` and
    ``values[a]`` split each name at ``::``."""

    names: tuple[str, ...]
    groups: tuple[str, ...]
    values: tuple[str, ...]
    sample_ids: tuple[str, ...]
    present: np.ndarray
    certainty: np.ndarray
    source: str

    @property
    def group_names(self) -> tuple[str, ...]:
        """The attribute groups in file order (CUB: 28, e.g. ``has_wing_color``)."""
        return tuple(dict.fromkeys(self.groups))

    def columns_of(self, group: str) -> np.ndarray:
        """Column indices of one group's attributes; an unknown group is a one-line error."""
        columns = np.flatnonzero(np.asarray(self.groups) == group)
        if not columns.size:
            known = list(self.group_names)
            raise FeatkitError(f"{self.source}: no attribute group '{group}'"
                               f"{closest(group, known)} (groups: {', '.join(known)})")
        return columns

    def rows(self, sample_ids: Sequence[str]) -> np.ndarray:
        """Row of each sample id; ids without attributes are a one-line error."""
        index = {sid: i for i, sid in enumerate(self.sample_ids)}
        missing = [sid for sid in sample_ids if sid not in index]
        if missing:
            raise FeatkitError(f"{self.source}: {len(missing)} of {len(sample_ids)} images have no "
                               f"attribute lines (e.g. {missing[0]}); do the features come from "
                               "this dataset root (--data-root)?")
        return np.asarray([index[sid] for sid in sample_ids], dtype=np.int64)

    def categorical(self, group: str) -> dict[str, str]:
        """One group as a categorical attribute per sample id: its present values joined by
        ``+`` in file order (``black+white``), ``none`` when none is present."""
        columns = self.columns_of(group)
        values = [self.values[c] for c in columns]
        out = {}
        for sid, row in zip(self.sample_ids, self.present[:, columns]):
            shown = [v for v, on in zip(values, row) if on]
            out[sid] = VALUE_JOIN.join(shown) if shown else NO_VALUE
        return out


def cub_folder(root: str | os.PathLike) -> Path:
    """The folder of a CUB tree that holds ``images.txt``: the root or ``root/CUB_200_2011``."""
    root = Path(root).expanduser()
    nested = root / "CUB_200_2011"
    return nested if (nested / "images.txt").exists() else root


def find_cub_attribute_files(root: str | os.PathLike) -> tuple[Path, Path] | None:
    """``(image_attribute_labels.txt, attributes.txt)`` of a CUB tree, or None without them.
    ``attributes.txt`` ships next to the ``CUB_200_2011`` folder in the official archive; it is
    also looked for inside it and in ``attributes/``."""
    folder = cub_folder(root)
    labels = folder / "attributes" / "image_attribute_labels.txt"
    if not labels.exists():
        return None
    for names in (folder / "attributes" / "attributes.txt", folder / "attributes.txt",
                  folder.parent / "attributes.txt"):
        if names.exists():
            return labels, names
    raise MissingDataError(
        f"cub: {labels} exists but attributes.txt (the attribute names) is in none of "
        f"{folder.parent / 'attributes.txt'}, {folder / 'attributes.txt'}, "
        f"{folder / 'attributes' / 'attributes.txt'}; copy it from CUB_200_2011.tgz"
    )


def _id_lines(path: Path) -> list[tuple[int, str, int]]:
    """``<integer id> <text>`` lines as ``(id, text, line number)``; blank lines skipped."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value.strip():
            raise DatasetFormatError(f"{path}:{lineno}: expected '<id> <value>', got {line!r}")
        rows.append((int(key), value.strip(), lineno))
    return rows


def _label_table(path: Path) -> np.ndarray:
    """The first four integer columns of ``image_attribute_labels.txt`` (image id, attribute id,
    is_present, certainty id) as an ``n x 4`` array. Fast path: every line has five fields (the
    fifth, the annotation time, is dropped); otherwise each line is read on its own."""
    text = path.read_text(encoding="utf-8")
    n_lines = sum(1 for line in text.splitlines() if line.strip())
    if len(text.split()) == 5 * n_lines:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # older NumPy warns at a token that is no number
            try:
                numbers = np.fromstring(text, dtype=np.float64, sep=" ")
            except ValueError:  # newer NumPy raises there: read line by line below
                numbers = np.zeros(0)
        if numbers.size == 5 * n_lines:
            table = numbers.reshape(-1, 5)[:, :4]
            if np.array_equal(table, np.round(table)):
                return table.astype(np.int64)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            rows.append([int(v) for v in fields[:4]])
        except ValueError:
            rows = None
        if rows is None or len(fields) < 4:
            raise DatasetFormatError(f"{path}:{lineno}: expected '<image id> <attribute id> "
                                     f"<is_present> <certainty id> [<time>]', got {line!r}")
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _line_of(path: Path, row: int) -> int:
    """The line number of the ``row``-th non-blank line of a file (for error messages)."""
    count = -1
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        count += bool(line.strip())
        if count == row:
            return lineno
    return row + 1


def read_cub_attributes(root: str | os.PathLike) -> BinaryAttributes:
    """CUB-200-2011's binary attributes of every image in ``images.txt`` (sample ids are its
    image paths, as the ``cub`` reader names them)."""
    found = find_cub_attribute_files(root)
    folder = cub_folder(root)
    if found is None:
        raise MissingDataError(
            f"cub: no attribute annotations under {folder} (expected "
            f"{folder / 'attributes' / 'image_attribute_labels.txt'}); they ship in "
            "CUB_200_2011.tgz"
        )
    labels_path, names_path = found
    names, groups, values = [], [], []
    attribute_ids: dict[int, int] = {}
    for key, name, lineno in _id_lines(names_path):
        group, sep, value = name.partition("::")
        if not sep or not group or not value:
            raise DatasetFormatError(f"{names_path}:{lineno}: expected '<id> <group>::<value>', "
                                     f"got {name!r}")
        if key in attribute_ids:
            raise DatasetFormatError(f"{names_path}:{lineno}: attribute id {key} appears twice")
        attribute_ids[key] = len(names)
        names.append(name)
        groups.append(group)
        values.append(value)
    images = _id_lines(folder / "images.txt")
    image_rows = {key: i for i, (key, _, _) in enumerate(images)}
    table = _label_table(labels_path)
    present = np.zeros((len(images), len(names)), dtype=bool)
    certainty = np.zeros((len(images), len(names)), dtype=np.int8)
    if len(table):
        image_index = np.asarray([image_rows.get(int(k), -1) for k in table[:, 0]])
        attr_index = np.asarray([attribute_ids.get(int(k), -1) for k in table[:, 1]])
        checks = (
            (image_index < 0, f"image id not in {folder / 'images.txt'}"),
            (attr_index < 0, f"attribute id not in {names_path}"),
            (~np.isin(table[:, 2], (0, 1)), "is_present must be 0 or 1"),
            (~np.isin(table[:, 3], list(CUB_CERTAINTIES)), "certainty id must be 1..4"),
        )
        for bad, why in checks:
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DatasetFormatError(f"{labels_path}:{_line_of(labels_path, row)}: {why} "
                                         f"(got {' '.join(map(str, table[row]))})")
        present[image_index, attr_index] = table[:, 2] == 1
        certainty[image_index, attr_index] = table[:, 3]
    return BinaryAttributes(
        names=tuple(names), groups=tuple(groups), values=tuple(values),
        sample_ids=tuple(path for _, path, _ in images), present=present, certainty=certainty,
        source=str(labels_path),
    )


# -- categorical attributes per sample -------------------------------------------------------------


@dataclass(frozen=True)
class AttributeTable:
    """Categorical attributes by sample id (``values[sample_id][name]``), from ``source``."""

    names: tuple[str, ...]
    values: Mapping[str, Mapping[str, str]]
    source: str

    def column(self, name: str, sample_ids: Sequence[str]) -> list[str | None]:
        """One attribute for each sample id (None where the image has no value); an unknown
        attribute name is a one-line error listing the known ones."""
        if name not in self.names:
            known = list(self.names)
            listing = ", ".join(known) if known else "none: the manifest needs a header such as "\
                "'relpath,label,fgd,bgd,env'"
            raise FeatkitError(f"{self.source}: no attribute '{name}'{closest(name, known)} "
                               f"(attributes: {listing})")
        empty: Mapping[str, str] = {}
        return [self.values.get(sid, empty).get(name) for sid in sample_ids]


def read_sample_attributes(dataset: str, root: str | os.PathLike | None) -> AttributeTable:
    """The categorical attributes a dataset's reader lists for every sample of every split,
    plus, for a CUB tree with attribute files, one column per attribute group
    (:meth:`BinaryAttributes.categorical`)."""
    from featkit.datasets import open_dataset

    reader = open_dataset(dataset, root)
    values: dict[str, dict[str, str]] = {}
    names: dict[str, None] = {}
    for split in reader.splits:
        for sample in reader.samples(split):
            if sample.attributes:
                values.setdefault(sample.sample_id, {}).update(sample.attributes)
                names.update(dict.fromkeys(sample.attributes))
    if find_cub_attribute_files(reader.data_folder()) is not None:
        binary = read_cub_attributes(reader.data_folder())
        for group in binary.group_names:
            names[group] = None
            for sid, value in binary.categorical(group).items():
                values.setdefault(sid, {})[group] = value
    return AttributeTable(tuple(names), values, f"{dataset} at {reader.data_folder()}")


# -- attribute value merges ---------------------------------------------------------------------------

#: Key of an attribute map that applies to every attribute (a flat ``{"pink": "red"}`` file).
EVERY_ATTRIBUTE = "*"


def read_attr_map(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """An ``--attr-map`` JSON file: ``{"fgd": {"pink": "red", ...}, "bgd": {...}}`` per
    attribute, or a flat ``{"pink": "red", "orange": "yellow"}`` for every attribute (returned
    under :data:`EVERY_ATTRIBUTE`). Names are checked when the map is applied."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"attribute map {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FeatkitError(f"attribute map {path} is not valid JSON ({err})") from err
    shape = ('a JSON object of value -> value, e.g. {"pink": "red"}, or of attribute -> such '
             'an object, e.g. {"fgd": {"pink": "red"}}')
    if not isinstance(data, dict):
        raise FeatkitError(f"attribute map {path}: expected {shape}")
    if all(isinstance(v, str) for v in data.values()):
        return {EVERY_ATTRIBUTE: dict(data)}
    if all(isinstance(v, dict) and all(isinstance(t, str) for t in v.values())
           for v in data.values()):
        return {str(k): dict(v) for k, v in data.items()}
    raise FeatkitError(f"attribute map {path}: expected {shape}")


# -- class hierarchies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Taxonomy:
    """A class hierarchy: ``levels`` from the finest (the dataset's classes) to the coarsest,
    and for each class its name at every level (``table[class][k]`` at ``levels[k]``)."""

    levels: tuple[str, ...]
    table: Mapping[str, tuple[str, ...]]
    source: str

    def level_index(self, level: str) -> int:
        if level not in self.levels:
            raise FeatkitError(f"{self.source}: no level '{level}'"
                               f"{closest(level, list(self.levels))} "
                               f"(levels: {', '.join(self.levels)})")
        return self.levels.index(level)

    def mapping(self, class_names: Sequence[str], level: str) -> dict[str, str]:
        """``{class: its name at level}`` for every class of a dataset. A class is found by its
        name, or by the name without a numeric prefix (``001.Black_footed_Albatross``); classes
        the file does not list are a one-line error."""
        k = self.level_index(level)
        plain = {}
        for name in self.table:
            match = _NUMBERED.match(name)
            plain.setdefault(match.group(1) if match else name, name)
        out, missing = {}, []
        for name in class_names:
            match = _NUMBERED.match(name)
            key = name if name in self.table else plain.get(match.group(1) if match else name)
            if key is None:
                missing.append(name)
            else:
                out[name] = self.table[key][k]
        if missing:
            raise FeatkitError(f"{self.source}: {len(missing)} of {len(class_names)} classes are "
                               f"not listed (e.g. '{missing[0]}'{closest(missing[0], list(plain))})")
        return out


def read_taxonomy(path: str | os.PathLike) -> Taxonomy:
    """A hierarchy CSV: a header naming the levels from fine to coarse
    (``species,genus,family,order``), then one line per class with its name at each level.
    Lines starting with ``#`` are comments. Every cell must be filled, a class listed once, and
    each name must have one parent at the next level (a tree)."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"hierarchy file {path} does not exist")
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in row]
            if not cells or not "".join(cells) or cells[0].startswith("#"):
                continue
            rows.append((lineno, cells))
    if len(rows) < 2:
        raise DatasetFormatError(f"{path}: expected a header naming the levels (e.g. "
                                 "'species,genus,family,order') and one line per class")
    (_, levels), body = rows[0], rows[1:]
    if len(levels) < 2 or not all(levels) or len(set(levels)) != len(levels):
        raise DatasetFormatError(f"{path}:{rows[0][0]}: the header must name two or more "
                                 f"distinct levels, got {','.join(levels)!r}")
    table: dict[str, tuple[str, ...]] = {}
    parents: list[dict[str, tuple[str, int]]] = [{} for _ in levels]
    for lineno, cells in body:
        if len(cells) != len(levels) or not all(cells):
            raise DatasetFormatError(f"{path}:{lineno}: expected {len(levels)} non-empty names "
                                     f"({','.join(levels)}), got {','.join(cells)!r}")
        if cells[0] in table:
            raise DatasetFormatError(f"{path}:{lineno}: class '{cells[0]}' is listed twice")
        for k in range(1, len(levels) - 1):
            name, parent = cells[k], cells[k + 1]
            seen = parents[k].setdefault(name, (parent, lineno))
            if seen[0] != parent:
                raise DatasetFormatError(
                    f"{path}:{lineno}: {levels[k]} '{name}' has {levels[k + 1]} '{parent}' here "
                    f"but '{seen[0]}' on line {seen[1]}; a hierarchy gives each name one parent")
        table[cells[0]] = tuple(cells)
    return Taxonomy(tuple(levels), table, str(path))
