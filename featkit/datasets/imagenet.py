"""ImageNet-1k and its distribution-shift test sets, in the layouts users have on disk.

Class names are WordNet ids (``n01440764``), so every set names its classes the way ImageNet
does and a classifier trained on ImageNet can be scored on any of them by name. The 1,000
ImageNet wnids (sorted: line i is the class index models use), the readable names CLIP's
zero-shot prompts use, and the ImageNet-R / ImageNet-A class lists ship in
``featkit/datasets/data/`` (see ``SOURCES.md`` there).

- ``imagenet``: ``train/<wnid>/`` and ``val/<wnid>/``, or the devkit's flat ``val/`` with
  ``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat`` (ILSVRC2012_ID -> wnid), or
  Kaggle's ``ILSVRC/Data/CLS-LOC/`` with ``LOC_val_solution.csv``. The official val split (the
  50,000 images everyone reports) is featkit's ``test``; ``val`` is carved from train.
- ``imagenetv2`` (MatchedFrequency), ``imagenetv2-threshold0.7``, ``imagenetv2-top-images``:
  ``imagenetv2-<variant>-format-val/<class index>/``.
- ``imagenet-sketch``: ``sketch/<wnid>/``; ``imagenet-r``, ``imagenet-a``: ``<wnid>/`` folders of
  their 200 classes; ``objectnet``: ``objectnet-1.0/images/<folder>/`` with the release's
  ``mappings/``, restricted to the 113 classes that map to ImageNet classes.

The shifted sets have a ``test`` split only: they are evaluation sets, and a classifier is
fitted on ImageNet (``featkit shift``). Each says which ImageNet classes each of its classes
stands for (:meth:`ShiftedImageNet.reference_classes`), which is how its logits are masked.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from featkit.datasets import register_dataset
from featkit.datasets.base import DatasetFormatError, ImageDataset, Sample, check_disjoint
from featkit.errors import MissingDataError

DATA = Path(__file__).parent / "data"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff", ".gif")


def _read_lines(name: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in (DATA / name).read_text().splitlines() if line.strip())


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 wnids in class-index order (sorted)."""
    return _read_lines("imagenet_wnids.txt")


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """A readable name per ImageNet class (CLIP's curated zero-shot names), by class index."""
    return _read_lines("imagenet_class_names.txt")


def readable_names(wnids: Sequence[str]) -> list[str]:
    """The readable ImageNet name of each wnid (for prompts); unknown ids stay as they are."""
    names = dict(zip(imagenet_wnids(), imagenet_class_names()))
    return [names.get(w, w) for w in wnids]


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (no hidden ones), sorted by name."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file()
                       and e.name.lower().endswith(IMAGE_SUFFIXES))
    return [folder / name for name in names]


def _subfolders(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    return [folder / name for name in names]


def class_folder_samples(dataset: str, folder: Path, base: Path, index: Mapping[str, int], *,
                         inner: str = "") -> list[Sample]:
    """Samples of ``folder/<class>/[inner/]<image>`` for every class folder, labelled by
    ``index``; ids are paths relative to ``base``. A folder naming no known class is an error."""
    samples = []
    for class_dir in _subfolders(folder):
        if class_dir.name not in index:
            raise DatasetFormatError(
                f"{dataset}: {class_dir} is not a class folder of {dataset} (expected "
                f"{', '.join(list(index)[:2])}, ...); point --data-root at the dataset itself")
        images = class_dir / inner if inner else class_dir
        if not images.is_dir():
            continue
        label = index[class_dir.name]
        samples += [Sample(p.relative_to(base).as_posix(), label, str(p))
                    for p in _image_files(images)]
    return samples


def _nonempty(dataset: str, split: str, samples: list[Sample], where: Path) -> list[Sample]:
    if not samples:
        raise MissingDataError(f"{dataset}: no images in {where} (the {split} split); check "
                               f"--data-root")
    return samples


class ShiftedImageNet(ImageDataset):
    """An evaluation-only set (``test`` split only) whose classes stand for ImageNet classes.

    Subclasses list their test samples in :meth:`_test_samples` and, when their class names
    are not ImageNet wnids, override :meth:`reference_classes`."""

    #: the folder the release unpacks to (the root may be that folder or its parent)
    FOLDER = ""

    def folder(self) -> Path:
        nested = self.root / self.FOLDER
        return nested if self.FOLDER and nested.is_dir() else self.root

    def data_folder(self) -> Path:
        return self.folder()

    def reference_classes(self) -> dict[str, tuple[str, ...]]:
        """Each class name -> the ImageNet wnids it stands for (here: itself)."""
        return {name: (name,) for name in self.class_names}

    def _test_samples(self) -> list[Sample]:
        raise NotImplementedError

    def _official_splits(self) -> dict[str, list[Sample]]:
        if not self.folder().is_dir():
            raise MissingDataError(f"{self.name}: no data under {self.root} (expected "
                                   f"{self.root / self.FOLDER}); {self.obtain_hint()}")
        return {"test": _nonempty(self.name, "test", self._test_samples(), self.folder())}

    def obtain_hint(self) -> str:
        return f"download it from {self.homepage} and pass --data-root DIR"

    def _all_splits(self) -> dict[str, list[Sample]]:
        """The official test split alone: nothing to carve, these sets train nothing."""
        if self._splits is None:
            official = self._official_splits()
            check_disjoint(self.name, official)
            self._splits = dict(official)
        return self._splits


class _WnidFolders(ShiftedImageNet):
    """``<FOLDER>/<wnid>/<image>`` over a fixed list of classes (the ``CLASSES`` data file)."""

    CLASSES = "imagenet_wnids.txt"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.class_names = list(_read_lines(self.CLASSES))

    def _test_samples(self) -> list[Sample]:
        index = {w: i for i, w in enumerate(self.class_names)}
        return class_folder_samples(self.name, self.folder(), self.folder(), index)


@register_dataset("imagenet-sketch", "ImageNet-Sketch, 50,889 sketches of the 1,000 ImageNet "
                  "classes (sketch/<wnid>/; test only)")
class ImageNetSketch(_WnidFolders):
    """ImageNet-Sketch (Wang et al. 2019): ``[root/]sketch/<wnid>/*.JPEG``."""

    homepage = "https://github.com/HaohanWang/ImageNet-Sketch"
    FOLDER = "sketch"


@register_dataset("imagenet-r", "ImageNet-R(enditions), 30,000 images of 200 ImageNet classes "
                  "(imagenet-r/<wnid>/; test only)")
class ImageNetR(_WnidFolders):
    """ImageNet-R (Hendrycks et al. 2021): ``[root/]imagenet-r/<wnid>/*.jpg``, 200 classes."""

    homepage = "https://github.com/hendrycks/imagenet-r"
    FOLDER = "imagenet-r"
    CLASSES = "imagenet_r_wnids.txt"


@register_dataset("imagenet-a", "ImageNet-A, 7,500 natural adversarial images of 200 ImageNet "
                  "classes (imagenet-a/<wnid>/; test only)")
class ImageNetA(_WnidFolders):
    """ImageNet-A (Hendrycks et al. 2021): ``[root/]imagenet-a/<wnid>/*.jpg``, 200 classes."""

    homepage = "https://github.com/hendrycks/natural-adv-examples"
    FOLDER = "imagenet-a"
    CLASSES = "imagenet_a_wnids.txt"


class _ImageNetV2(ShiftedImageNet):
    """ImageNetV2 (Recht et al. 2019): ``[root/]imagenetv2-<variant>-format-val/<i>/*.jpeg``,
    folders named by ImageNet class index 0..999."""

    homepage = "https://github.com/modestyachts/ImageNetV2"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.class_names = list(imagenet_wnids())

    def _test_samples(self) -> list[Sample]:
        index = {str(i): i for i in range(len(self.class_names))}
        return class_folder_samples(self.name, self.folder(), self.folder(), index)


@register_dataset("imagenetv2", "ImageNetV2 MatchedFrequency, 10,000 images of the 1,000 "
                  "ImageNet classes (folders 0..999; test only)")
class ImageNetV2(_ImageNetV2):
    FOLDER = "imagenetv2-matched-frequency-format-val"


@register_dataset("imagenetv2-threshold0.7", "ImageNetV2 Threshold0.7 (folders 0..999; test only)")
class ImageNetV2Threshold(_ImageNetV2):
    FOLDER = "imagenetv2-threshold0.7-format-val"


@register_dataset("imagenetv2-top-images", "ImageNetV2 TopImages (folders 0..999; test only)")
class ImageNetV2TopImages(_ImageNetV2):
    FOLDER = "imagenetv2-top-images-format-val"


@register_dataset("objectnet", "ObjectNet, the 113 classes that overlap ImageNet (objectnet-1.0/"
                  "images/ with its mappings/; test only)")
class ObjectNet(ShiftedImageNet):
    """ObjectNet (Barbu et al. 2019): ``[root/]objectnet-1.0/images/<folder>/*.png`` and
    ``mappings/`` (``folder_to_objectnet_label.json``, ``objectnet_to_imagenet_1k.json``,
    ``imagenet_to_label_2012_v2``, ``pytorch_to_imagenet_2012_id.json``).

    Only the classes ``objectnet_to_imagenet_1k.json`` maps to ImageNet are read (113 in the
    release); class names are their folder names, sorted. Each stands for one or more ImageNet
    classes (e.g. alarm clock -> analog clock, digital clock). Images are cropped by 2 pixels
    on each side when decoded, removing the red border of the release (as imagenet-testbed
    does)."""

    homepage = "https://objectnet.dev"
    FOLDER = "objectnet-1.0"
    MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
                "imagenet_to_label_2012_v2", "pytorch_to_imagenet_2012_id.json")
    BORDER = 2

    def _mapping(self, name: str) -> Path:
        path = self.folder() / "mappings" / name
        if not path.is_file():
            raise MissingDataError(f"objectnet: no {path}; ObjectNet's class mapping to ImageNet "
                                   f"is read from the release's mappings/ folder")
        return path

    @staticmethod
    def _json(path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None

    def reference_classes(self) -> dict[str, tuple[str, ...]]:
        """ObjectNet folder -> the ImageNet wnids its label maps to, from ``mappings/``."""
        folders = {label: folder
                   for folder, label in self._json(self._mapping(self.MAPPINGS[0])).items()}
        to_imagenet = self._json(self._mapping(self.MAPPINGS[1]))
        line_path = self._mapping(self.MAPPINGS[2])
        lines = [line.strip() for line in line_path.read_text(encoding="utf-8").splitlines()]
        pytorch = self._json(self._mapping(self.MAPPINGS[3]))
        line_to_index = {int(line): int(index) for index, line in pytorch.items()}
        by_name = {name: i for i, name in enumerate(lines) if name}
        wnids = imagenet_wnids()
        groups: dict[str, tuple[str, ...]] = {}
        for label, names in to_imagenet.items():
            if label not in folders:
                raise DatasetFormatError(f"{self.MAPPINGS[1]}: label {label!r} has no folder in "
                                         f"{self.MAPPINGS[0]}")
            group = []
            for name in names.split("; "):
                if name not in by_name or by_name[name] not in line_to_index:
                    raise DatasetFormatError(f"{self.MAPPINGS[1]}: {label!r} maps to {name!r}, "
                                             f"which is not a line of {line_path.name}")
                group.append(wnids[line_to_index[by_name[name]]])
            groups[folders[label]] = tuple(sorted(set(group)))
        return dict(sorted(groups.items()))

    def _official_splits(self) -> dict[str, list[Sample]]:
        if not (self.folder() / "images").is_dir():
            raise MissingDataError(f"objectnet: no data under {self.root} (expected "
                                   f"{self.root / self.FOLDER / 'images'}); {self.obtain_hint()}")
        return super()._official_splits()

    def _test_samples(self) -> list[Sample]:
        groups = self.reference_classes()
        self.class_names = list(groups)
        index = {folder: i for i, folder in enumerate(groups)}
        images = self.folder() / "images"
        samples = []
        for folder in groups:
            if (images / folder).is_dir():
                samples += [Sample(p.relative_to(self.folder()).as_posix(), index[folder], str(p))
                            for p in _image_files(images / folder)]
        return samples

    def load_image(self, sample: Sample):
        from PIL import ImageOps

        image = super().load_image(sample)
        return ImageOps.crop(image, border=self.BORDER)


# --------------------------------------------------------------------------- ImageNet-1k


@register_dataset("imagenet", "ImageNet-1k (ILSVRC-2012): train/<wnid>/, val/<wnid>/ or the "
                  "devkit's flat val/; official val is test, val carved from train")
class ImageNet(ImageDataset):
    """ILSVRC-2012 with classes in wnid order. The root holds ``train/`` and ``val/`` (or is
    Kaggle's download, with ``ILSVRC/Data/CLS-LOC/``). ``val/`` is either ``val/<wnid>/*.JPEG``
    or the flat release ``val/ILSVRC2012_val_00000001.JPEG``... labelled by the devkit
    (``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``,
    under the root or beside it) or by Kaggle's ``LOC_val_solution.csv``."""

    homepage = "https://image-net.org/download.php"
    KAGGLE = Path("ILSVRC") / "Data" / "CLS-LOC"
    DEVKIT = "ILSVRC2012_devkit_t12"
    GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"

    def __init__(self, root) -> None:
        super().__init__(root)
        self.class_names = list(imagenet_wnids())

    def folder(self) -> Path:
        kaggle = self.root / self.KAGGLE
        return kaggle if not (self.root / "train").is_dir() and kaggle.is_dir() else self.root

    def data_folder(self) -> Path:
        return self.folder()

    def _official_splits(self) -> dict[str, list[Sample]]:
        folder = self.folder()
        for split in ("train", "val"):
            if not (folder / split).is_dir():
                raise MissingDataError(f"imagenet: no data under {self.root} (expected "
                                       f"{folder / split}/); download ILSVRC-2012 from "
                                       f"{self.homepage} and pass --data-root DIR")
        index = {w: i for i, w in enumerate(self.class_names)}
        train = class_folder_samples(self.name, folder / "train", folder, index)
        val_dir = folder / "val"
        if _subfolders(val_dir):
            test = class_folder_samples(self.name, val_dir, folder, index)
        else:
            labels = self._flat_val_labels()
            test = []
            for path in _image_files(val_dir):
                if path.stem not in labels:
                    raise DatasetFormatError(f"imagenet: {path.name} has no label in the "
                                             f"ground truth ({self._label_source})")
                if labels[path.stem] not in index:
                    raise DatasetFormatError(f"imagenet: {path.name} is labelled "
                                             f"{labels[path.stem]!r}, not an ImageNet-1k wnid "
                                             f"({self._label_source})")
                test.append(Sample(path.relative_to(folder).as_posix(), index[labels[path.stem]],
                                   str(path)))
        return {"train": _nonempty(self.name, "train", train, folder / "train"),
                "test": _nonempty(self.name, "test", test, val_dir)}

    # -- the flat val folder ---------------------------------------------------------------------
    def _candidates(self, *parts: str) -> list[Path]:
        bases = dict.fromkeys([self.root, self.folder(), self.root.parent])
        return [base.joinpath(*parts) for base in bases]

    def _flat_val_labels(self) -> dict[str, str]:
        """Image stem (``ILSVRC2012_val_00000001``) -> wnid, from the devkit or Kaggle's CSV."""
        for base in self._candidates(self.DEVKIT, "data"):
            truth = base / self.GROUND_TRUTH
            if truth.is_file():
                self._label_source = str(truth)
                return self._devkit_labels(truth, base / "meta.mat")
        for path in self._candidates("LOC_val_solution.csv"):
            if path.is_file():
                self._label_source = str(path)
                return self._kaggle_labels(path)
        raise MissingDataError(
            f"imagenet: {self.folder() / 'val'} is the flat val folder but no labels were found "
            f"(expected {self.root / self.DEVKIT / 'data' / self.GROUND_TRUTH} with meta.mat, "
            f"or LOC_val_solution.csv); unpack ILSVRC2012_devkit_t12.tar.gz next to it")

    def _devkit_labels(self, truth: Path, meta: Path) -> dict[str, str]:
        from scipy.io import loadmat

        if not meta.is_file():
            raise MissingDataError(f"imagenet: {truth} needs the devkit's {meta} (ILSVRC2012_ID "
                                   f"-> wnid)")
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                  if int(s["num_children"]) == 0}
        labels = {}
        for lineno, line in enumerate(truth.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                wnid = leaves[int(line)]
            except (ValueError, KeyError):
                raise DatasetFormatError(f"{truth}:{lineno}: {line.strip()!r} is not an "
                                         f"ILSVRC2012_ID of {meta.name}") from None
            labels[f"ILSVRC2012_val_{lineno:08d}"] = wnid
        return labels

    def _kaggle_labels(self, path: Path) -> dict[str, str]:
        labels = {}
        with path.open(newline="") as handle:
            for lineno, row in enumerate(csv.reader(handle), start=1):
                if lineno == 1 and row and row[0] == "ImageId":
                    continue
                if len(row) < 2 or not row[1].split():
                    raise DatasetFormatError(f"{path}:{lineno}: expected 'ImageId,wnid ...'")
                labels[row[0]] = row[1].split()[0]
        return labels
