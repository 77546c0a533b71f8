"""Readers for fine-grained datasets whose official layouts torchvision does not read:
CUB-200-2011 (``cub``) and Stanford Dogs (``dogs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featkit.datasets import register_dataset
from featkit.datasets.base import DatasetFormatError, ImageDataset, Sample, read_utf8
from featkit.errors import MissingDataError


def _read_id_table(path: Path) -> list[tuple[str, str, int]]:
    """``<id> <value>`` lines as ``(id, value, line number)``; blank lines are skipped. The file
    must be UTF-8 and name each id once: a repeated id (even with the same value) would
    otherwise let its last line win silently."""
    rows = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(read_utf8(path).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if not value.strip():
            raise DatasetFormatError(f"{path}:{lineno}: expected '<id> <value>', got {line!r}")
        if key in first_line:
            raise DatasetFormatError(
                f"{path}:{lineno}: id {key} appears twice (first on line {first_line[key]}); "
                "each id must have exactly one line"
            )
        first_line[key] = lineno
        rows.append((key, value.strip(), lineno))
    return rows


def _check_first_image(dataset: str, samples: list[Sample], listed_in: Path) -> None:
    """Fail with one line when the images the annotations name are not on disk."""
    if samples and not Path(samples[0].locator).exists():
        raise MissingDataError(
            f"{dataset}: {listed_in} lists {samples[0].sample_id} but {samples[0].locator} does not "
            "exist; are the images extracted next to the annotation files?"
        )


@register_dataset("cub", "CUB-200-2011 birds, 200 classes (official train/test; val carved from train)")
class CubDataset(ImageDataset):
    """CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
    ``classes.txt`` and ``images/``. The root may be the ``CUB_200_2011`` folder or its parent.
    Sample ids are the image paths of ``images.txt`` (relative to ``images/``); class names drop
    the numeric prefix (``001.Black_footed_Albatross`` -> ``Black_footed_Albatross``)."""

    homepage = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
    FOLDER = "CUB_200_2011"

    def folder(self) -> Path:
        """The folder that holds ``images.txt``: the root itself or ``root/CUB_200_2011``."""
        nested = self.root / self.FOLDER
        return nested if (nested / "images.txt").exists() else self.root

    def data_folder(self) -> Path:
        return self.folder()

    def _official_splits(self) -> dict[str, list[Sample]]:
        folder = self.folder()
        for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
            if not (folder / name).exists():
                raise MissingDataError(
                    f"cub: no data under {self.root} (expected {self.root / name} or "
                    f"{self.root / self.FOLDER / name}); download CUB_200_2011.tgz from "
                    f"{self.homepage}, extract it and pass --data-root DIR"
                )
        class_rows = _read_id_table(folder / "classes.txt")
        class_ids = {key: position for position, (key, _, _) in enumerate(class_rows)}
        self.class_names = [value.partition(".")[2] if value.partition(".")[0].isdigit() else value
                            for _, value, _ in class_rows]
        labels = {key: (value, lineno) for key, value, lineno in _read_id_table(folder / "image_class_labels.txt")}
        is_train = {key: (value, lineno) for key, value, lineno in _read_id_table(folder / "train_test_split.txt")}
        splits: dict[str, list[Sample]] = {"train": [], "test": []}
        listed_on: dict[str, int] = {}
        for image_id, relpath, lineno in _read_id_table(folder / "images.txt"):
            if listed_on.setdefault(relpath, lineno) != lineno:
                raise DatasetFormatError(
                    f"{folder / 'images.txt'}:{lineno}: {relpath} is listed twice (first on line "
                    f"{listed_on[relpath]}); each image must have exactly one id"
                )
            if image_id not in labels:
                raise DatasetFormatError(
                    f"{folder / 'images.txt'}:{lineno}: image id {image_id} has no line in "
                    f"{folder / 'image_class_labels.txt'}"
                )
            if image_id not in is_train:
                raise DatasetFormatError(
                    f"{folder / 'images.txt'}:{lineno}: image id {image_id} has no line in "
                    f"{folder / 'train_test_split.txt'}"
                )
            class_id, label_line = labels[image_id]
            if class_id not in class_ids:
                raise DatasetFormatError(
                    f"{folder / 'image_class_labels.txt'}:{label_line}: class id {class_id} is not in "
                    f"{folder / 'classes.txt'}"
                )
            flag, flag_line = is_train[image_id]
            if flag not in ("0", "1"):
                raise DatasetFormatError(
                    f"{folder / 'train_test_split.txt'}:{flag_line}: expected 1 (train) or 0 (test), got {flag!r}"
                )
            sample = Sample(relpath, class_ids[class_id], str(folder / "images" / relpath))
            splits["train" if flag == "1" else "test"].append(sample)
        _check_first_image("cub", splits["train"] or splits["test"], folder / "images.txt")
        return splits


def _mat_strings(cell) -> list[str]:
    """Strings of a MATLAB cell array as ``scipy.io.loadmat`` returns it: an object array whose
    elements are 1-element string arrays (or plain strings when loaded with ``squeeze_me``)."""
    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        while isinstance(item, np.ndarray):
            if item.size != 1:
                raise ValueError(f"expected one string per cell, got an array of shape {item.shape}")
            item = item.ravel()[0]
        out.append(str(item))
    return out


@register_dataset("dogs", "Stanford Dogs, 120 breeds (official train/test; val carved from train)")
class StanfordDogsDataset(ImageDataset):
    """Stanford Dogs: ``Images/<wnid>-<name>/`` and the official ``train_list.mat`` /
    ``test_list.mat`` (in ``lists/`` or at the root, as ``lists.tar`` extracts). Sample ids are the
    ``file_list`` entries (relative to ``Images/``); labels are the 1-based ``labels`` minus one;
    class names come from the folder names (``n02085620-Chihuahua`` -> ``Chihuahua``)."""

    homepage = "http://vision.stanford.edu/aditya86/ImageNetDogs/"

    def _list_path(self, name: str) -> Path:
        for candidate in (self.root / "lists" / name, self.root / name):
            if candidate.exists():
                return candidate
        raise MissingDataError(
            f"dogs: no data under {self.root} (expected {self.root / 'lists' / name}); download "
            f"images.tar and lists.tar from {self.homepage}, extract them (Images/, lists/) and "
            "pass --data-root DIR"
        )

    def _read_list(self, path: Path) -> list[tuple[str, int]]:
        from scipy.io import loadmat

        try:
            mat = loadmat(str(path))
            files = _mat_strings(mat["file_list"])
            labels = np.asarray(mat["labels"]).ravel()
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise DatasetFormatError(
                f"dogs: {path} is not an official Stanford Dogs list (needs 'file_list' and 'labels'): {err}"
            ) from None
        if len(files) != len(labels):
            raise DatasetFormatError(f"dogs: {path} has {len(files)} files but {len(labels)} labels")
        if len(labels) and (labels.min() < 1 or np.any(labels != np.round(labels))):
            raise DatasetFormatError(f"dogs: {path} labels must be 1-based integers, got min {labels.min()}")
        return [(f, int(label) - 1) for f, label in zip(files, labels)]

    def _official_splits(self) -> dict[str, list[Sample]]:
        train_path, test_path = self._list_path("train_list.mat"), self._list_path("test_list.mat")
        self.require("Images", how=f"download images.tar from {self.homepage}, extract it and pass --data-root DIR")
        lists = {"train": self._read_list(train_path), "test": self._read_list(test_path)}
        folders: dict[int, str] = {}
        for split, entries in lists.items():
            for relpath, label in entries:
                folder = relpath.split("/", 1)[0]
                if folders.setdefault(label, folder) != folder:
                    raise DatasetFormatError(
                        f"dogs: label {label + 1} names two folders ({folders[label]}, {folder}) in "
                        f"{train_path if split == 'train' else test_path}"
                    )
        n_classes = max(folders, default=-1) + 1
        missing = [i + 1 for i in range(n_classes) if i not in folders]
        if missing:
            raise DatasetFormatError(f"dogs: no image of label {missing[0]} in {train_path} or {test_path}")
        self.class_names = [folders[i].partition("-")[2] or folders[i] for i in range(n_classes)]
        images = self.root / "Images"
        splits = {
            split: [Sample(relpath, label, str(images / relpath)) for relpath, label in entries]
            for split, entries in lists.items()
        }
        _check_first_image("dogs", splits["train"] or splits["test"], train_path)
        return splits
