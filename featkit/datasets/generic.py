"""Generic layouts (image folder, CSV manifest) and ``digits``, the bundled scikit-learn digits."""

from __future__ import annotations

import csv
import os
import re
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from featkit.datasets import register_dataset
from featkit.datasets.base import SPLITS, DatasetFormatError, ImageDataset, Sample
from featkit.errors import MissingDataError
from probes.splits import stratified_split

_INTEGER = re.compile(r"^-?\d+$")
_ID_NAME = re.compile(r"^(-?\d+)\s+(\S.*)$")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@register_dataset("imagefolder", "generic DIR/<split>/<class>/<image> folders (--data-root DIR)")
class ImageFolderDataset(ImageDataset):
    """Generic ``DIR/<split>/<class>/<image>``; classes are the union of class folders, sorted."""

    def _official_splits(self) -> dict[str, list[Sample]]:
        self.require(
            "train",
            how="expected DIR/train/<class>/<image> (and DIR/test/..., optional DIR/val/...); pass --data-root DIR",
        )
        split_dirs = _subdirs(self.root)
        classes = sorted({c.name for d in split_dirs for c in _subdirs(d)})
        self.class_names = classes
        index = {c: i for i, c in enumerate(classes)}
        splits: dict[str, list[Sample]] = {}
        for split_dir in split_dirs:
            samples = []
            for class_dir in _subdirs(split_dir):
                for image in sorted(class_dir.rglob("*")):
                    rel = image.relative_to(self.root).as_posix()
                    if (
                        image.suffix.lower() in IMAGE_EXTENSIONS
                        and not any(part.startswith(".") for part in rel.split("/"))
                        and image.is_file()
                    ):
                        samples.append(Sample(rel, index[class_dir.name], str(image)))
            splits[split_dir.name] = samples
        if "test" not in splits:
            raise MissingDataError(f"imagefolder: no test split under {self.root} (expected {self.root / 'test'}/<class>/<image>)")
        for split in ("train", "test"):
            if not splits[split]:
                raise MissingDataError(
                    f"imagefolder: no images under {self.root / split} (expected {self.root / split}/<class>/<image>"
                    f" with one of {', '.join(IMAGE_EXTENSIONS)})"
                )
        return splits


def _attribute_names(path: Path, lineno: int, header: list[str]) -> list[str]:
    """The attribute names a manifest header gives after ``relpath,label``: non-empty, unique."""
    names = [name.strip() for name in header[2:]]
    for column, name in enumerate(names, start=3):
        if not name:
            raise DatasetFormatError(f"{path}:{lineno}: header column {column} has no name")
        if names.count(name) > 1 or name.lower() in ("relpath", "label"):
            raise DatasetFormatError(f"{path}:{lineno}: header column name '{name}' appears twice")
    return names


def _subdirs(path: Path) -> list[Path]:
    """Sorted sub-folders, skipping hidden ones (``.ipynb_checkpoints``, ``.DS_Store`` folders)."""
    return [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]


#: The :attr:`Sample.attributes` key of a multi-label manifest row's label set: the class
#: positions, space-separated (``"1 10 12 29"``); the row's label is the first of them.
MULTI_LABEL_KEY = "labels"
_HEADER_NAMES = ("relpath", "path", "image", "filename")
#: Bytes of manifest lines parsed at once with array operations.
BLOCK_BYTES = 16 << 20


class ManifestSamples(Sequence[Sample]):
    """One split of a manifest, stored as arrays: every relpath in one UTF-8 buffer with row
    offsets, the labels (and multi-label sets) as integer arrays, attributes only where a header
    names some. A :class:`Sample` is built when a row is read, so a 2.7-million-row split (the
    iNat2021 of FG-BMK) costs a few hundred MB, not a Python object per row. ``rows`` (a
    subset, in order) makes the views the validation carve returns."""

    def __init__(self, root: Path, blob: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                 label_sets: dict[int, tuple[int, ...]] | None = None,
                 attributes: list[dict[str, str] | None] | None = None,
                 rows: np.ndarray | None = None) -> None:
        self.root, self.blob, self.offsets, self.labels = root, blob, offsets, labels
        self.label_sets, self.attributes = label_sets or {}, attributes
        self.rows = np.arange(len(labels), dtype=np.int64) if rows is None else rows
        self._prefix = str(root) + os.sep

    def __len__(self) -> int:
        return len(self.rows)

    def relpath(self, i: int) -> str:
        """The relpath of row ``i`` of this view."""
        row = int(self.rows[i])
        return self.blob[self.offsets[row]:self.offsets[row + 1]].tobytes().decode("utf-8")

    def __getitem__(self, i):  # noqa: D105 (Sequence's contract)
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        row = int(self.rows[i])
        relpath = self.relpath(i)
        attributes = dict(self.attributes[row] or {}) if self.attributes else {}
        if row in self.label_sets:
            attributes[MULTI_LABEL_KEY] = " ".join(map(str, self.label_sets[row]))
        return Sample(relpath, int(self.labels[row]), self._prefix + relpath, attributes)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __add__(self, other: Sequence[Sample]) -> list[Sample]:
        return [*self, *other]

    def __radd__(self, other: Sequence[Sample]) -> list[Sample]:
        return [*other, *self]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # a mutable-looking sequence, as a list is

    def multi_labels(self) -> dict[str, tuple[int, ...]]:
        """Sample id -> label set (class positions) of this view's multi-label rows."""
        if not self.label_sets:
            return {}
        return {self.relpath(i): self.label_sets[row]
                for i, row in enumerate(self.rows.tolist()) if row in self.label_sets}

    def view(self, positions: np.ndarray) -> ManifestSamples:
        """The rows at ``positions`` of this view, in that order, sharing the arrays."""
        return ManifestSamples(self.root, self.blob, self.offsets, self.labels,
                               self.label_sets, self.attributes, self.rows[positions])

    def _keys(self, rows: np.ndarray) -> list[bytes]:
        """The relpaths of stored rows ``rows``, as UTF-8 bytes."""
        memory = memoryview(self.blob)
        return [memory[a:b].tobytes() for a, b in zip(self.offsets[rows].tolist(),
                                                      self.offsets[rows + 1].tolist())]

    def class_key_order(self) -> np.ndarray:
        """Positions of this view grouped by label (ascending) and sorted by relpath within a
        label: the order in which the base reader's validation carve takes each class's
        samples (by id; UTF-8 byte order is Python's string order), one class's keys at a
        time rather than a string per row at once."""
        labels = self.labels[self.rows]
        by_label = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[by_label])) + 1
        parts = []
        for group in np.split(by_label, bounds):
            keys = self._keys(self.rows[group])
            parts.append(group[sorted(range(len(group)), key=keys.__getitem__)])
        return np.concatenate(parts) if parts else by_label

    def path_hashes(self, chunk: int = 1 << 16) -> np.ndarray:
        """A 64-bit hash of each row's relpath, normalised as ``os.path.normpath`` does where
        it has ``.`` or ``..`` segments or doubled or trailing slashes (for the disjointness
        check: the root is the same for every row)."""
        out = np.empty(len(self), dtype=np.int64)
        for start in range(0, len(self), chunk):
            keys = self._keys(self.rows[start:start + chunk])
            for i, key in enumerate(keys):
                if b"/." in key or b"//" in key or key.startswith(b".") or key.endswith(b"/"):
                    keys[i] = os.path.normpath(key.decode("utf-8")).encode("utf-8")
            out[start:start + len(keys)] = [hash(key) for key in keys]
        return out


def _is_integer_label(label: bytes) -> bool:
    """An integer label, or several separated by spaces (a multi-label row)."""
    return label.isdigit() or (bool(label.split()) and all(
        _INTEGER.match(p.decode("ascii", "replace")) for p in label.split()))


class _ManifestReader:
    """Reads one ``<split>.csv`` line by line into arrays (see :class:`ManifestSamples`).

    Without a header, an integer label is after a line's **last** comma, so relpaths may hold
    commas (FG-BMK's DeepFashion: ``img/Take_Less,_Give_More_Tee/img_00000017.jpg,17``); when
    the last field is no integer, the line is ``relpath,label`` and its further fields are
    ignored (name labels with commas in their paths need quoting). A label of space-separated
    integers is a multi-label row (SkinCon: ``path,1 10 12 29``). With a
    ``relpath,label[,attr...]`` header the columns are CSV fields and the further ones are
    attributes. Quoted fields follow CSV rules either way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: list[str] | None = None
        size = path.stat().st_size
        self.blob = np.empty(max(size, 1), dtype=np.uint8)
        self.used = 0
        self.offsets = array("q", [0])
        self.linenos = array("q")
        self.labels = array("q")
        self.text_labels: list[str] = []  # labels that are not integers, by row
        self.label_sets: dict[int, tuple[int, ...]] = {}
        self.attributes: list[dict[str, str] | None] = []
        self.first = {True: None, False: None}  # first (line, label) of each label kind
        self.count = {True: 0, False: 0}

    def read(self) -> _ManifestReader:
        """Read the file: its first line (a header?) alone, then blocks of lines, each block
        parsed with array operations when every line is ``relpath,<digits>`` with no quote
        (FG-BMK's manifests), line by line otherwise."""
        with self.path.open("rb") as handle:
            first = handle.readline()
            self._line(1, first)
            lineno, rest = 1, b""
            while True:
                block = handle.read(BLOCK_BYTES)
                data = rest + block
                cut = data.rfind(b"\n") + 1 if block else len(data)
                if not data:
                    break
                lines, rest = data[:cut], data[cut:]
                if not lines:
                    continue
                parsed = None if self.names is not None else self._block(lines, lineno)
                if parsed is None:
                    pieces = lines.split(b"\n")
                    if not pieces[-1]:
                        pieces.pop()
                    for offset, line in enumerate(pieces, start=1):
                        self._line(lineno + offset, line)
                lineno += lines.count(b"\n") + (not lines.endswith(b"\n"))
                if not block:
                    break
        return self

    def _block(self, lines: bytes, lineno: int) -> bool | None:
        """Parse a block of whole lines that follow ``lineno`` with array operations; None
        (nothing read) when some line needs the line-by-line rules."""
        if b'"' in lines:
            return None
        buf = np.frombuffer(lines, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        if not lines.endswith(b"\n"):
            ends = np.append(ends, len(buf))
        starts = np.concatenate([[0], ends[:-1] + 1])
        stops = ends - ((ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13))  # drop \r
        keep = stops > starts  # blank lines are skipped, as line by line
        starts, stops, numbers = starts[keep], stops[keep], lineno + 1 + np.flatnonzero(keep)
        if not len(starts):
            return True
        commas = np.flatnonzero(buf == 44)
        last = commas[np.searchsorted(commas, stops) - 1] if len(commas) else starts - 1
        width = stops - last - 1
        if (np.any(last < starts) or np.any(width < 1) or np.any(width > 18)
                or np.any(last == starts) or np.any(buf[starts] == 32)
                or np.any(buf[last - 1] == 32)):
            return None
        labels = np.zeros(len(starts), dtype=np.int64)
        for k in range(int(width.max())):  # the label's digits, from the last
            has = width > k
            digit = buf[np.where(has, stops - 1 - k, stops - 1)].astype(np.int64) - 48
            if np.any(has & ((digit < 0) | (digit > 9))):
                return None
            labels += np.where(has, digit * 10 ** k, 0)
        lengths = last - starts
        end = self.used + int(lengths.sum())
        if end > len(self.blob):
            self.blob = np.resize(self.blob, max(end, 2 * len(self.blob)))
        inside = np.zeros(len(buf) + 1, dtype=np.int8)
        np.add.at(inside, starts, 1)
        np.add.at(inside, last, -1)
        self.blob[self.used:end] = buf[np.cumsum(inside[:-1], dtype=np.int8) > 0]
        self.offsets.frombytes((self.used + np.cumsum(lengths)).astype(np.int64).tobytes())
        self.used = end
        self.linenos.frombytes(numbers.astype(np.int64).tobytes())
        self.labels.frombytes(labels.tobytes())
        if self.first[True] is None:
            self.first[True] = (int(numbers[0]), lines[last[0] + 1:stops[0]].decode())
        self.count[True] += len(starts)
        return True

    def _fields(self, lineno: int, line: bytes) -> tuple[bytes, bytes, list[str]] | None:
        text = line.rstrip(b"\r\n")
        if not text.strip():
            return None
        if self.names is None and b'"' not in text:
            relpath, comma, label = text.rpartition(b",")
            if not comma:
                raise DatasetFormatError(f"{self.path}:{lineno}: expected 'relpath,label', got "
                                         f"{text.decode('utf-8', 'replace')!r}")
            if not len(self.labels) and relpath.split(b",")[0].strip().decode(
                    "utf-8", "replace").lower() in _HEADER_NAMES:
                self.names = _attribute_names(self.path, lineno, text.decode().split(","))
                return None
            if b"," in relpath and not _is_integer_label(label.strip()):
                relpath, label = text.split(b",", 2)[:2]  # relpath,label,extra...: ignored
            return relpath.strip(), label.strip(), []
        row = next(csv.reader([text.decode("utf-8")]))
        if not "".join(row).strip():
            return None
        if len(row) < 2:
            raise DatasetFormatError(f"{self.path}:{lineno}: expected 'relpath,label', got "
                                     f"{','.join(row)!r}")
        if self.names is None:
            if not len(self.labels) and row[0].strip().lower() in _HEADER_NAMES:
                self.names = _attribute_names(self.path, lineno, row)
                return None
            if len(row) > 2 and not _is_integer_label(row[-1].strip().encode()):
                return row[0].strip().encode(), row[1].strip().encode(), []
            return ",".join(row[:-1]).strip().encode(), row[-1].strip().encode(), []
        if self.names and len(row) > 2 + len(self.names):
            raise DatasetFormatError(f"{self.path}:{lineno}: {len(row)} columns, but the header "
                                     f"names {2 + len(self.names)}")
        return row[0].strip().encode(), row[1].strip().encode(), row[2:]

    def _line(self, lineno: int, line: bytes) -> None:
        fields = self._fields(lineno, line)
        if fields is None:
            return
        relpath, label, extra = fields
        end = self.used + len(relpath)
        if end > len(self.blob):
            self.blob = np.resize(self.blob, max(end, 2 * len(self.blob)))
        self.blob[self.used:end] = np.frombuffer(relpath, dtype=np.uint8)
        self.used = end
        self.offsets.append(end)
        self.linenos.append(lineno)
        parts = [label] if label.isdigit() else label.split()
        numeric = _is_integer_label(label)
        self.count[numeric] += 1
        if self.first[numeric] is None:
            self.first[numeric] = (lineno, label.decode("utf-8", "replace"))
        if numeric:
            ids = tuple(int(p) for p in parts)
            self.labels.append(ids[0])
            if len(ids) > 1:
                self.label_sets[len(self.labels) - 1] = ids
        else:
            self.labels.append(0)
            self.text_labels.append(label.decode("utf-8"))
        if self.names:
            values = {name: value.strip() for name, value in zip(self.names, extra)
                      if value.strip()}
            self.attributes.append(values or None)


@register_dataset("manifest", "CSV manifests DIR/<split>.csv of relpath,label (+ DIR/classes.txt), FG-BMK's format")
class ManifestDataset(ImageDataset):
    """``DIR/<split>.csv`` with ``relpath,label`` lines (relpaths relative to ``DIR``; labels are
    integers or class names; an optional ``relpath,label`` header, whose further columns name
    per-image attributes such as ``fgd,bgd,env`` read into :attr:`Sample.attributes`) and an
    optional ``DIR/classes.txt``: either one class name per line (integer labels are 0-based
    positions), or ``<id> <name>`` lines (integer labels are those ids, e.g. 1-based; labels
    become positions). Every FG-BMK manifest reads as it is: without a header the label follows
    a line's last comma (relpaths may hold commas), space-separated integer labels make a
    multi-label row (its label is the first; the set is ``attributes["labels"]``,
    :data:`MULTI_LABEL_KEY`), and splits are stored as arrays (:class:`ManifestSamples`)."""

    HOW = "expected DIR/train.csv and DIR/test.csv with relpath,label lines; pass --data-root DIR"

    def _read_classes(self) -> tuple[list[str], dict[int, int] | None] | None:
        """Class names, and ``{id: position}`` when every line is ``<id> <name>``; None without the file."""
        path = self.root / "classes.txt"
        if not path.exists():
            return None
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
        parsed = [(n, _ID_NAME.match(line)) for n, line in lines]
        ids: dict[int, int] | None = None
        if lines and all(match for _, match in parsed):
            ids = {}
            for position, (lineno, match) in enumerate(parsed):
                class_id = int(match.group(1))
                if class_id in ids:
                    raise DatasetFormatError(f"{path}:{lineno}: class id {class_id} appears twice")
                ids[class_id] = position
            lines = [(lineno, match.group(2).strip()) for lineno, match in parsed]
        seen: set[str] = set()
        for lineno, name in lines:
            if name in seen:
                raise DatasetFormatError(f"{path}:{lineno}: class name '{name}' appears twice")
            seen.add(name)
        return [name for _, name in lines], ids

    def _check_label_kinds(self, readers: dict[str, _ManifestReader]) -> bool:
        """True when every label is an integer (or a list of them), False when none is; mixed
        labels are an error naming the first label of the rarer kind (most likely the typo)."""
        counts = {kind: sum(r.count[kind] for r in readers.values()) for kind in (True, False)}
        if counts[True] and counts[False]:
            odd = False if counts[False] <= counts[True] else True

            def first(kind: bool) -> tuple[Path, int, str]:
                reader = next(r for r in readers.values() if r.first[kind] is not None)
                return (reader.path, *reader.first[kind])

            (o_path, o_line, o_label), (u_path, u_line, u_label) = first(odd), first(not odd)
            raise DatasetFormatError(
                f"{o_path}:{o_line}: label '{o_label}' does not match the other labels (e.g. "
                f"{u_path}:{u_line} '{u_label}'); labels must be all integers or all class names"
            )
        return not counts[False]

    def _positions(self, reader: _ManifestReader, classes: list[str],
                   ids: dict[int, int] | None, from_file: bool
                   ) -> tuple[np.ndarray, dict[int, tuple[int, ...]]]:
        """A reader's integer labels (and label sets) as class positions, checked."""
        labels = np.frombuffer(reader.labels, dtype=np.int64).copy() if reader.labels else \
            np.zeros(0, dtype=np.int64)
        values = np.concatenate([labels, np.fromiter(
            (v for s in reader.label_sets.values() for v in s), dtype=np.int64)])
        owners = np.concatenate([np.arange(len(labels)), np.fromiter(
            (row for row, s in reader.label_sets.items() for _ in s), dtype=np.int64)])
        if ids is not None:
            keys = np.asarray(sorted(ids), dtype=np.int64)
            where = np.searchsorted(keys, values).clip(max=len(keys) - 1)
            bad = np.flatnonzero(keys[where] != values)
            if bad.size:
                row = int(owners[bad[np.argmin(owners[bad])]])
                raise DatasetFormatError(
                    f"{reader.path}:{reader.linenos[row]}: label {values[bad[np.argmin(owners[bad])]]} "
                    f"is not a class id of classes.txt (ids {min(ids)}..{max(ids)})")
            mapped = np.asarray([ids[k] for k in keys.tolist()], dtype=np.int64)[where]
        else:
            bad = np.flatnonzero((values < 0) | (values >= len(classes)))
            if bad.size:
                first = bad[np.argmin(owners[bad])]
                source = f"classes.txt has {len(classes)} names" if from_file else \
                    "labels are 0-based class indices"
                raise DatasetFormatError(
                    f"{reader.path}:{reader.linenos[int(owners[first])]}: label {values[first]} "
                    f"outside 0..{len(classes) - 1} ({source})")
            mapped = values
        sets, start = {}, len(labels)
        for row, members in reader.label_sets.items():
            sets[row] = tuple(int(v) for v in mapped[start:start + len(members)])
            start += len(members)
        return mapped[:len(labels)], sets

    def _official_splits(self) -> dict[str, ManifestSamples]:
        self.require("train.csv", how=self.HOW)
        self.require("test.csv", how=self.HOW)
        readers = {split: _ManifestReader(self.root / f"{split}.csv").read()
                   for split in SPLITS if (self.root / f"{split}.csv").exists()}
        numeric = self._check_label_kinds(readers)
        read = self._read_classes()
        classes, ids = read if read is not None else (None, None)
        if classes is None:
            if numeric:
                top = max((max(int(np.frombuffer(r.labels, dtype=np.int64).max(initial=-1)),
                               max((max(s) for s in r.label_sets.values()), default=-1))
                           for r in readers.values()), default=-1)
                classes = [str(i) for i in range(top + 1)]
            else:
                classes = sorted({label for r in readers.values() for label in r.text_labels})
        self.class_names = classes
        index = {c: i for i, c in enumerate(classes)}
        splits = {}
        for split, reader in readers.items():
            if numeric:
                labels, sets = self._positions(reader, classes, ids, read is not None)
            else:
                for row, label in enumerate(reader.text_labels):
                    if label not in index:
                        raise DatasetFormatError(f"{reader.path}:{reader.linenos[row]}: label "
                                                 f"'{label}' is not in classes.txt")
                labels = np.asarray([index[label] for label in reader.text_labels],
                                    dtype=np.int64)
                sets = {}
            samples = ManifestSamples(self.root, reader.blob[:reader.used],
                                      np.frombuffer(reader.offsets, dtype=np.int64), labels, sets,
                                      reader.attributes or None)
            if len(samples) and not Path(samples[0].locator).exists():
                raise MissingDataError(
                    f"manifest: {reader.path}:{reader.linenos[0]} names {samples[0].sample_id} "
                    f"but {samples[0].locator} does not exist (relpaths are relative to "
                    f"{self.root})"
                )
            splits[split] = samples
        return splits

    def _all_splits(self) -> dict[str, ManifestSamples]:
        """The base's splits (images listed once, ``val`` carved from train when there is no
        ``val.csv``), computed on the arrays: the same samples, no object per row."""
        if self._splits is None:
            official = self._official_splits()
            _check_disjoint(self.name, official)
            if "val" not in official:
                train = official["train"]
                order = train.class_key_order()  # the base carves each class sorted by id
                _, val_sorted = stratified_split(train.labels[train.rows][order])
                in_val = np.zeros(len(train), dtype=bool)
                in_val[order[val_sorted]] = True
                official["val"] = train.view(np.flatnonzero(in_val))
                official["train"] = train.view(np.flatnonzero(~in_val))
            self._splits = {k: official[k] for k in SPLITS if k in official}
        return self._splits


def _check_disjoint(dataset: str, splits: dict[str, ManifestSamples]) -> None:
    """:func:`featkit.datasets.base.check_disjoint` on 64-bit hashes of the normalised paths:
    the same one-line error for the first image listed twice (in split order); the exact paths
    of the rows whose hashes repeat decide, so a hash collision is no error."""
    names = list(splits)
    hashes = [splits[s].path_hashes() for s in names]
    flat = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int64)
    order = np.argsort(flat, kind="stable")
    repeated = np.flatnonzero(flat[order][1:] == flat[order][:-1]) + 1
    if not repeated.size:
        return
    starts = np.cumsum([0] + [len(h) for h in hashes])
    seen: dict[str, str] = {}
    for i in sorted(set(order[repeated].tolist()) | set(order[repeated - 1].tolist())):
        k = int(np.searchsorted(starts, i, side="right")) - 1
        split, samples = names[k], splits[names[k]]
        path = os.path.normpath(samples._prefix + samples.relpath(i - int(starts[k])))
        first = seen.get(path)
        if first is None:
            seen[path] = split
            continue
        if first == split:
            raise DatasetFormatError(
                f"{dataset}: {path} is listed twice in the {split} split; remove one of them")
        raise DatasetFormatError(
            f"{dataset}: {path} is in both the {first} and the {split} split (the same "
            "image in two splits leaks one into the other); remove it from one of them")


@register_dataset("digits", "scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download)")
class DigitsDataset(ImageDataset):
    """scikit-learn's handwritten digits: 10 classes, fixed seeded stratified 75/25 train/test."""

    TEST_FRACTION = 0.25
    SEED = 0

    def __init__(self, root: str | Path | None = None) -> None:
        """``root`` is ignored: the images ship with scikit-learn (the root reads ``sklearn:digits``
        so the cache key does not depend on the working directory)."""
        super().__init__("sklearn:digits")
        self.class_names = [str(d) for d in range(10)]
        self._images: np.ndarray | None = None

    def key_root(self) -> str:
        return "sklearn:digits"

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        return images, bunch.target.astype(np.int64)

    def _official_splits(self) -> dict[str, list[Sample]]:
        from sklearn.model_selection import train_test_split

        images, labels = self._load()
        self._images = images
        idx = np.arange(len(labels))
        train_idx, test_idx = train_test_split(
            idx, test_size=self.TEST_FRACTION, stratify=labels, random_state=self.SEED
        )
        make = lambda ids: [Sample(f"digit_{i:04d}", int(labels[i]), int(i)) for i in sorted(ids)]  # noqa: E731
        return {"train": make(train_idx), "test": make(test_idx)}

    def load_image(self, sample: Sample):
        from PIL import Image

        if self._images is None:
            self._images = self._load()[0]
        return Image.fromarray(self._images[sample.locator], mode="L")

    def image_path(self, sample: Sample) -> str:
        return f"sklearn digits #{sample.locator}"
