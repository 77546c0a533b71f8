"""Generic layouts (image folder, CSV manifest) and ``digits``, the bundled scikit-learn digits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from featkit.datasets import register_dataset
from featkit.datasets.base import ImageDataset, Sample
from featkit.errors import MissingDataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@register_dataset("imagefolder", "generic DIR/<split>/<class>/<image> folders (--data-root DIR)")
class ImageFolderDataset(ImageDataset):
    """Generic ``DIR/<split>/<class>/<image>``; classes are the union of class folders, sorted."""

    def _official_splits(self) -> dict[str, list[Sample]]:
        self.require(
            "train",
            how="expected DIR/train/<class>/<image> (and DIR/test/..., optional DIR/val/...); pass --data-root DIR",
        )
        split_dirs = [p for p in sorted(self.root.iterdir()) if p.is_dir()]
        classes = sorted({c.name for d in split_dirs for c in d.iterdir() if c.is_dir()})
        self.class_names = classes
        index = {c: i for i, c in enumerate(classes)}
        splits: dict[str, list[Sample]] = {}
        for split_dir in split_dirs:
            samples = []
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                for image in sorted(class_dir.rglob("*")):
                    if image.suffix.lower() in IMAGE_EXTENSIONS and image.is_file():
                        rel = image.relative_to(self.root).as_posix()
                        samples.append(Sample(rel, index[class_dir.name], str(image)))
            splits[split_dir.name] = samples
        if "test" not in splits:
            raise MissingDataError(f"imagefolder: no test split under {self.root} (expected {self.root / 'test'}/<class>/<image>)")
        return splits


@register_dataset("manifest", "CSV manifests DIR/<split>.csv of relpath,label (+ DIR/classes.txt), FG-BMK's format")
class ManifestDataset(ImageDataset):
    """``DIR/<split>.csv`` with ``relpath,label`` lines (labels are integers or class names) and an
    optional ``DIR/classes.txt`` (one class name per line, or ``<id> <name>``)."""

    def _read_classes(self) -> list[str] | None:
        path = self.root / "classes.txt"
        if not path.exists():
            return None
        names = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            head, _, tail = line.partition(" ")
            names.append(tail.strip() if head.isdigit() and tail.strip() else line)
        return names

    def _official_splits(self) -> dict[str, list[Sample]]:
        self.require("train.csv", how="expected DIR/train.csv and DIR/test.csv with relpath,label lines; pass --data-root DIR")
        self.require("test.csv", how="expected DIR/train.csv and DIR/test.csv with relpath,label lines; pass --data-root DIR")
        rows: dict[str, list[tuple[str, str, int]]] = {}
        for split in ("train", "val", "test"):
            path = self.root / f"{split}.csv"
            if not path.exists():
                continue
            rows[split] = []
            with path.open(newline="") as handle:
                for lineno, row in enumerate(csv.reader(handle), start=1):
                    if not row or not "".join(row).strip():
                        continue
                    if len(row) < 2:
                        raise MissingDataError(f"{path}:{lineno}: expected 'relpath,label', got {','.join(row)!r}")
                    if lineno == 1 and row[0].strip().lower() in ("relpath", "path", "image", "filename"):
                        continue
                    rows[split].append((row[0].strip(), row[1].strip(), lineno))
        classes = self._read_classes()
        all_labels = [label for split_rows in rows.values() for _, label, _ in split_rows]
        numeric = all(label.lstrip("-").isdigit() for label in all_labels)
        if classes is None:
            if numeric:
                n = max((int(v) for v in all_labels), default=-1) + 1
                classes = [str(i) for i in range(n)]
            else:
                classes = sorted(set(all_labels))
        self.class_names = classes
        index = {c: i for i, c in enumerate(classes)}
        splits = {}
        for split, split_rows in rows.items():
            samples = []
            for relpath, label, lineno in split_rows:
                if numeric:
                    label_id = int(label)
                    if not 0 <= label_id < len(classes):
                        raise MissingDataError(f"{self.root / (split + '.csv')}:{lineno}: label {label_id} outside 0..{len(classes) - 1} (classes.txt has {len(classes)} names)")
                else:
                    if label not in index:
                        raise MissingDataError(f"{self.root / (split + '.csv')}:{lineno}: label '{label}' is not in classes.txt")
                    label_id = index[label]
                samples.append(Sample(relpath, label_id, str(self.root / relpath)))
            splits[split] = samples
        return splits


@register_dataset("digits", "scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download)")
class DigitsDataset(ImageDataset):
    """scikit-learn's handwritten digits: 10 classes, fixed seeded stratified 75/25 train/test."""

    TEST_FRACTION = 0.25
    SEED = 0

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root or "sklearn:digits")
        self.class_names = [str(d) for d in range(10)]
        self._images: np.ndarray | None = None

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
