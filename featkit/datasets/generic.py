"""Generic layouts (image folder, CSV manifest) and ``digits``, the bundled scikit-learn digits."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from featkit.datasets import register_dataset
from featkit.datasets.base import SPLITS, DatasetFormatError, ImageDataset, Sample
from featkit.errors import MissingDataError

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


@register_dataset("manifest", "CSV manifests DIR/<split>.csv of relpath,label (+ DIR/classes.txt), FG-BMK's format")
class ManifestDataset(ImageDataset):
    """``DIR/<split>.csv`` with ``relpath,label`` lines (relpaths relative to ``DIR``; labels are
    integers or class names; an optional ``relpath,label`` header, whose further columns name
    per-image attributes such as ``fgd,bgd,env`` read into :attr:`Sample.attributes`) and an
    optional ``DIR/classes.txt``: either one class name per line (integer labels are 0-based
    positions), or ``<id> <name>`` lines (integer labels are those ids, e.g. 1-based; labels
    become positions)."""

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

    def _read_rows(self, path: Path) -> list[tuple[str, str, int, dict[str, str]]]:
        """``(relpath, label, line, attributes)`` per line. With a header, the columns after
        ``relpath,label`` are attributes named by it (``relpath,label,fgd,bgd,env``); empty
        cells are left out. Without a header extra columns are ignored."""
        rows = []
        names: list[str] = []
        with path.open(newline="") as handle:
            for lineno, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2:
                    raise DatasetFormatError(f"{path}:{lineno}: expected 'relpath,label', got {','.join(row)!r}")
                if not rows and row[0].strip().lower() in ("relpath", "path", "image", "filename"):
                    names = _attribute_names(path, lineno, row)
                    continue
                if names and len(row) > 2 + len(names):
                    raise DatasetFormatError(f"{path}:{lineno}: {len(row)} columns, but the header "
                                             f"names {2 + len(names)}")
                extra = {name: value.strip() for name, value in zip(names, row[2:])
                         if value.strip()}
                rows.append((row[0].strip(), row[1].strip(), lineno, extra))
        return rows

    def _check_label_kinds(self, rows: dict[str, list[tuple[str, str, int, dict[str, str]]]]
                           ) -> bool:
        """True when every label is an integer, False when none is; mixed labels are an error
        naming the first label of the rarer kind (most likely the typo)."""
        kinds: dict[bool, list[tuple[str, int, str]]] = {True: [], False: []}
        for split, split_rows in rows.items():
            for _, label, lineno, _ in split_rows:
                kinds[bool(_INTEGER.match(label))].append((f"{self.root / (split + '.csv')}", lineno, label))
        if kinds[True] and kinds[False]:
            odd, usual = (kinds[False], kinds[True]) if len(kinds[False]) <= len(kinds[True]) else (kinds[True], kinds[False])
            raise DatasetFormatError(
                f"{odd[0][0]}:{odd[0][1]}: label '{odd[0][2]}' does not match the other labels (e.g. "
                f"{usual[0][0]}:{usual[0][1]} '{usual[0][2]}'); labels must be all integers or all class names"
            )
        return not kinds[False]

    def _official_splits(self) -> dict[str, list[Sample]]:
        self.require("train.csv", how=self.HOW)
        self.require("test.csv", how=self.HOW)
        rows = {
            split: self._read_rows(self.root / f"{split}.csv")
            for split in SPLITS
            if (self.root / f"{split}.csv").exists()
        }
        all_labels = [label for split_rows in rows.values() for _, label, _, _ in split_rows]
        numeric = self._check_label_kinds(rows)
        read = self._read_classes()
        classes, ids = read if read is not None else (None, None)
        if classes is None:
            if numeric:
                classes = [str(i) for i in range(max((int(v) for v in all_labels), default=-1) + 1)]
            else:
                classes = sorted(set(all_labels))
        self.class_names = classes
        index = {c: i for i, c in enumerate(classes)}
        splits = {}
        for split, split_rows in rows.items():
            csv_path = self.root / f"{split}.csv"
            samples = []
            for relpath, label, lineno, extra in split_rows:
                if numeric and ids is not None:
                    if int(label) not in ids:
                        raise DatasetFormatError(
                            f"{csv_path}:{lineno}: label {label} is not a class id of classes.txt "
                            f"(ids {min(ids)}..{max(ids)})"
                        )
                    label_id = ids[int(label)]
                elif numeric:
                    label_id = int(label)
                    if not 0 <= label_id < len(classes):
                        source = f"classes.txt has {len(classes)} names" if read else "labels are 0-based class indices"
                        raise DatasetFormatError(
                            f"{csv_path}:{lineno}: label {label_id} outside 0..{len(classes) - 1} ({source})"
                        )
                else:
                    if label not in index:
                        raise DatasetFormatError(f"{csv_path}:{lineno}: label '{label}' is not in classes.txt")
                    label_id = index[label]
                samples.append(Sample(relpath, label_id, str(self.root / relpath), extra))
            if samples and not Path(samples[0].locator).exists():
                raise MissingDataError(
                    f"manifest: {csv_path}:{split_rows[0][2]} names {samples[0].sample_id} but "
                    f"{samples[0].locator} does not exist (relpaths are relative to {self.root})"
                )
            splits[split] = samples
        return splits


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
