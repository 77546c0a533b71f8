"""Datasets torchvision already reads (Stanford Cars, FGVC-Aircraft, Flowers-102, Food-101,
CIFAR-100): thin wrappers over torchvision's own classes built with ``download=False``.

torchvision lists the samples; these wrappers name the splits, give each sample a stable id
(its path relative to the dataset folder, or ``train/00000`` for CIFAR), check that the text
files torchvision will read are UTF-8, and turn torchvision's "Dataset not found" into a one-line
:class:`~featkit.errors.MissingDataError`. Images are decoded by featkit's one decode path
(:mod:`featkit.datasets.images`) from their files, not by torchvision's loader (whose
``convert("RGB")`` clips 16-bit images and drops transparency onto arbitrary colours); for the
RGB images of the official releases the pixels are the same. CIFAR's in-memory images come from
torchvision's object and pass through the same RGB rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featkit.datasets import register_dataset
from featkit.datasets.base import DatasetFormatError, ImageDataset, Sample, read_utf8
from featkit.datasets.images import to_rgb
from featkit.errors import MissingDataError


class TorchvisionDataset(ImageDataset):
    """Base for the wrappers. Subclasses set the class attributes and :meth:`_make`/:meth:`_entries`.

    The root is the directory torchvision is given (it holds ``FOLDER``); the ``FOLDER`` itself is
    accepted too. torchvision objects are built lazily, one per split, and dropped when pickled
    (DataLoader workers rebuild them on their first image), so the wrapper stays cheap to send.
    """

    #: the folder torchvision looks for under its root, e.g. ``stanford_cars``
    FOLDER: str = ""
    #: files/folders under ``FOLDER`` in the order torchvision needs them (first missing one is reported)
    EXPECTED: tuple[str, ...] = ()
    #: text files under ``FOLDER`` that torchvision reads; checked to be UTF-8 before it does
    TEXT_FILES: tuple[str, ...] = ()
    #: our official split name -> torchvision's split argument
    TV_SPLITS: dict[str, str] = {}
    #: torchvision class name, for the "how to obtain" hint
    TV_CLASS: str = ""
    #: True when torchvision itself checks md5 sums of the files (CIFAR, Flowers)
    MD5_CHECKED: bool = False

    def __init__(self, root) -> None:
        super().__init__(root)
        self._tv: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tv"] = {}
        return state

    # -- per dataset ----------------------------------------------------------------------------
    def _make(self, tv_root: str, tv_split: str):
        """Build the torchvision dataset object for one split (``download=False``, no transform)."""
        raise NotImplementedError

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        """``(sample id, label)`` for every item of a torchvision dataset, in its index order."""
        raise NotImplementedError

    def obtain_hint(self) -> str:
        return (
            f"download it with torchvision.datasets.{self.TV_CLASS}(DIR, download=True) on a machine "
            f"with internet (or from {self.homepage}) and pass --data-root DIR"
        )

    # -- provided -------------------------------------------------------------------------------
    def tv_root(self) -> Path:
        """The directory handed to torchvision: the root, or its parent when the root is ``FOLDER``."""
        if self.root.name == self.FOLDER and not (self.root / self.FOLDER).exists():
            return self.root.parent
        return self.root

    def folder(self) -> Path:
        return self.tv_root() / self.FOLDER

    def data_folder(self) -> Path:
        return self.folder()

    def _check_files(self) -> None:
        folder = self.folder()
        for relpath in self.EXPECTED:
            if not (folder / relpath).exists():
                misplaced = ""
                if (self.root / relpath).exists():
                    misplaced = (
                        f"; {relpath} is directly under {self.root} but torchvision reads it from "
                        f"{self.FOLDER}/: rename the folder to {self.FOLDER} or move the files into it"
                    )
                raise MissingDataError(
                    f"{self.name}: no data under {self.root} (expected {folder / relpath})"
                    f"{misplaced}; {self.obtain_hint()}"
                )
        for relpath in self.TEXT_FILES:
            if (folder / relpath).exists():
                read_utf8(folder / relpath)  # a stray byte is one line naming file and line

    def _get_tv(self, tv_split: str):
        if tv_split not in self._tv:
            self._check_files()
            try:
                self._tv[tv_split] = self._make(str(self.tv_root()), tv_split)
            except RuntimeError as err:
                if "not found" not in str(err).lower():
                    raise
                if self.MD5_CHECKED:  # the files exist (checked above), so their md5 sums differ
                    problem = (
                        f"the files under {self.folder()} fail torchvision's md5 check (corrupt, "
                        "truncated or not the official release)"
                    )
                else:
                    problem = (
                        f"torchvision.datasets.{self.TV_CLASS} found no data under {self.folder()} "
                        f"(expected {self.folder() / self.EXPECTED[0]})"
                    )
                raise MissingDataError(f"{self.name}: {problem}; {self.obtain_hint()}") from None
        return self._tv[tv_split]

    def _official_splits(self) -> dict[str, list[Sample]]:
        splits: dict[str, list[Sample]] = {}
        for split, tv_split in self.TV_SPLITS.items():
            tv_dataset = self._get_tv(tv_split)
            classes = [str(name) for name in tv_dataset.classes]
            if split == "train":
                self.class_names = classes
            elif classes != self.class_names:
                raise DatasetFormatError(
                    f"{self.name}: the {split} split under {self.folder()} names other classes than "
                    f"the train split ({len(classes)} vs {len(self.class_names)})"
                )
            splits[split] = [
                Sample(sample_id, int(label), self._locator(tv_split, index, sample_id))
                for index, (sample_id, label) in enumerate(self._entries(tv_dataset))
            ]
        return splits

    def _locator(self, tv_split: str, index: int, sample_id: str) -> Any:
        """Where :meth:`load_image` reads a sample: its file (ids are paths under ``FOLDER``)."""
        return str(self.folder() / sample_id)

    def image_path(self, sample: Sample) -> str:
        return str(self.folder() / sample.sample_id)

    def _relative(self, path) -> str:
        return Path(path).relative_to(self.folder()).as_posix()


@register_dataset("cars", "Stanford Cars, 196 models (torchvision StanfordCars; val carved from train)")
class StanfordCarsDataset(TorchvisionDataset):
    """Stanford Cars via ``torchvision.datasets.StanfordCars``: ``root/stanford_cars/`` with
    ``devkit/``, ``cars_train/``, ``cars_test/`` and ``cars_test_annos_withlabels.mat``."""

    homepage = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
    FOLDER = "stanford_cars"
    EXPECTED = (
        "devkit/cars_train_annos.mat",
        "cars_train",
        "devkit/cars_meta.mat",
        "cars_test_annos_withlabels.mat",
        "cars_test",
    )
    TV_SPLITS = {"train": "train", "test": "test"}
    TV_CLASS = "StanfordCars"

    def obtain_hint(self) -> str:
        return (
            "torchvision can no longer download Stanford Cars (the original URL is gone): get the "
            f"original files (see {self.homepage}; mirrors exist, e.g. on Kaggle) into "
            "DIR/stanford_cars/ and pass --data-root DIR"
        )

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import StanfordCars

        return StanfordCars(tv_root, split=tv_split, transform=None, download=False)

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        return [(self._relative(path), label) for path, label in tv_dataset._samples]


@register_dataset("aircraft", "FGVC-Aircraft, 100 variants (torchvision FGVCAircraft; official train/val/test)")
class AircraftDataset(TorchvisionDataset):
    """FGVC-Aircraft via ``torchvision.datasets.FGVCAircraft`` at the ``variant`` level (100
    classes): ``root/fgvc-aircraft-2013b/data/``. Uses the official train/val/test split."""

    homepage = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
    FOLDER = "fgvc-aircraft-2013b"
    EXPECTED = (
        "data/variants.txt",
        "data/images_variant_train.txt",
        "data/images_variant_val.txt",
        "data/images_variant_test.txt",
        "data/images",
    )
    TEXT_FILES = (
        "data/variants.txt",
        "data/images_variant_train.txt",
        "data/images_variant_val.txt",
        "data/images_variant_test.txt",
    )
    TV_SPLITS = {"train": "train", "val": "val", "test": "test"}
    TV_CLASS = "FGVCAircraft"

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import FGVCAircraft

        return FGVCAircraft(
            tv_root, split=tv_split, annotation_level="variant", transform=None, download=False
        )

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        return [
            (self._relative(path), label)
            for path, label in zip(tv_dataset._image_files, tv_dataset._labels)
        ]


@register_dataset("flowers", "Oxford Flowers-102 (torchvision Flowers102; official train/val/test)")
class FlowersDataset(TorchvisionDataset):
    """Oxford Flowers-102 via ``torchvision.datasets.Flowers102``: ``root/flowers-102/`` with
    ``jpg/``, ``imagelabels.mat`` and ``setid.mat`` (md5-checked by torchvision)."""

    homepage = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    FOLDER = "flowers-102"
    EXPECTED = ("imagelabels.mat", "setid.mat", "jpg")
    TV_SPLITS = {"train": "train", "val": "val", "test": "test"}
    TV_CLASS = "Flowers102"
    MD5_CHECKED = True

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import Flowers102

        return Flowers102(tv_root, split=tv_split, transform=None, download=False)

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        return [
            (self._relative(path), label)
            for path, label in zip(tv_dataset._image_files, tv_dataset._labels)
        ]


@register_dataset("food", "Food-101 (torchvision Food101; val carved from train)")
class FoodDataset(TorchvisionDataset):
    """Food-101 via ``torchvision.datasets.Food101``: ``root/food-101/`` with ``images/`` and
    ``meta/train.json``, ``meta/test.json``."""

    homepage = "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"
    FOLDER = "food-101"
    EXPECTED = ("meta/train.json", "meta/test.json", "images")
    TEXT_FILES = ("meta/train.json", "meta/test.json")
    TV_SPLITS = {"train": "train", "test": "test"}
    TV_CLASS = "Food101"

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import Food101

        return Food101(tv_root, split=tv_split, transform=None, download=False)

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        return [
            (self._relative(path), label)
            for path, label in zip(tv_dataset._image_files, tv_dataset._labels)
        ]


@register_dataset("cifar100", "CIFAR-100, 100 classes of 32x32 images (torchvision CIFAR100; val carved from train)")
class Cifar100Dataset(TorchvisionDataset):
    """CIFAR-100 via ``torchvision.datasets.CIFAR100``: ``root/cifar-100-python/`` with the
    ``train``, ``test`` and ``meta`` pickles (md5-checked by torchvision). Ids are
    ``train/00000``-style (split and index in the official pickle)."""

    homepage = "https://www.cs.toronto.edu/~kriz/cifar.html"
    FOLDER = "cifar-100-python"
    EXPECTED = ("train", "test", "meta")
    TV_SPLITS = {"train": "train", "test": "test"}
    TV_CLASS = "CIFAR100"
    MD5_CHECKED = True

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import CIFAR100

        return CIFAR100(tv_root, train=tv_split == "train", transform=None, download=False)

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        prefix = "train" if tv_dataset.train else "test"
        return [(f"{prefix}/{index:05d}", label) for index, label in enumerate(tv_dataset.targets)]

    def _locator(self, tv_split: str, index: int, sample_id: str) -> Any:
        return (tv_split, index)

    def load_image(self, sample: Sample):
        """The image from torchvision's in-memory arrays, through the RGB rules."""
        tv_split, index = sample.locator
        image, _ = self._get_tv(tv_split)[index]
        return to_rgb(image)

    def image_path(self, sample: Sample) -> str:
        return f"{self.folder() / sample.locator[0]} #{sample.locator[1]}"
