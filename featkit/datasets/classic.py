"""Classification benchmarks seeds 000 and 002 use: Oxford-IIIT Pets, CIFAR-10, Tiny-ImageNet.

Pets and CIFAR-10 are torchvision's readers (``download=False``) behind the
:class:`~featkit.datasets.torchvision_sets.TorchvisionDataset` wrapper; Tiny-ImageNet is read
from its release layout (``val_annotations.txt``), with classes in sorted wnid order and the
official val split as featkit's ``test`` (its test images are unlabelled).
"""

from __future__ import annotations

from pathlib import Path

from featkit.datasets import register_dataset
from featkit.datasets.base import DatasetFormatError, ImageDataset, Sample
from featkit.datasets.imagenet import class_folder_samples
from featkit.datasets.torchvision_sets import Cifar100Dataset, TorchvisionDataset
from featkit.errors import MissingDataError


@register_dataset("pets", "Oxford-IIIT Pets, 37 breeds (torchvision OxfordIIITPet; trainval / "
                  "test, val carved from trainval)")
class PetsDataset(TorchvisionDataset):
    """Oxford-IIIT Pets via ``torchvision.datasets.OxfordIIITPet``: ``root/oxford-iiit-pet/``
    with ``images/`` and ``annotations/{trainval,test}.txt``; classes by breed id."""

    homepage = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
    FOLDER = "oxford-iiit-pet"
    EXPECTED = ("annotations/trainval.txt", "annotations/test.txt", "images")
    TEXT_FILES = ("annotations/trainval.txt", "annotations/test.txt")
    TV_SPLITS = {"train": "trainval", "test": "test"}
    TV_CLASS = "OxfordIIITPet"

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import OxfordIIITPet

        return OxfordIIITPet(tv_root, split=tv_split, target_types="category", download=False)

    def _entries(self, tv_dataset) -> list[tuple[str, int]]:
        return [(self._relative(path), label)
                for path, label in zip(tv_dataset._images, tv_dataset._labels)]


@register_dataset("cifar10", "CIFAR-10, 10 classes of 32x32 images (torchvision CIFAR10; val "
                  "carved from train)")
class Cifar10Dataset(Cifar100Dataset):
    """CIFAR-10 via ``torchvision.datasets.CIFAR10``: ``root/cifar-10-batches-py/`` with
    ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` (md5-checked by torchvision). Ids
    are ``train/00000``-style, images come from torchvision's arrays, as for CIFAR-100."""

    FOLDER = "cifar-10-batches-py"
    EXPECTED = ("data_batch_1", "test_batch", "batches.meta")
    TV_CLASS = "CIFAR10"

    def _make(self, tv_root: str, tv_split: str):
        from torchvision.datasets import CIFAR10

        return CIFAR10(tv_root, train=tv_split == "train", transform=None, download=False)


@register_dataset("tiny-imagenet", "Tiny-ImageNet, 200 classes of 64x64 images (train/<wnid>/"
                  "images/, val/val_annotations.txt; official val is test)")
class TinyImageNet(ImageDataset):
    """Tiny-ImageNet: ``[root/]tiny-imagenet-200/`` with ``wnids.txt``,
    ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by
    ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>box``). Classes are the wnids of
    ``wnids.txt`` in sorted order (ImageFolder's order); the official val split is ``test``."""

    homepage = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    FOLDER = "tiny-imagenet-200"

    def folder(self) -> Path:
        nested = self.root / self.FOLDER
        return nested if (nested / "wnids.txt").is_file() else self.root

    def data_folder(self) -> Path:
        return self.folder()

    def _official_splits(self) -> dict[str, list[Sample]]:
        folder = self.folder()
        for name in ("wnids.txt", "train", "val/val_annotations.txt"):
            if not (folder / name).exists():
                raise MissingDataError(f"tiny-imagenet: no data under {self.root} (expected "
                                       f"{folder / name}); download {self.homepage}, unzip it "
                                       f"and pass --data-root DIR")
        wnids = sorted({w.strip() for w in (folder / "wnids.txt").read_text().split()})
        self.class_names = wnids
        index = {w: i for i, w in enumerate(wnids)}
        train = class_folder_samples(self.name, folder / "train", folder, index, inner="images")
        annotations = folder / "val" / "val_annotations.txt"
        test = []
        for lineno, line in enumerate(annotations.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DatasetFormatError(f"{annotations}:{lineno}: expected 'file<TAB>wnid' with "
                                         f"a wnid of wnids.txt, got {line.strip()!r}")
            path = folder / "val" / "images" / parts[0]
            test.append(Sample(path.relative_to(folder).as_posix(), index[parts[1]], str(path)))
        test.sort(key=lambda s: s.sample_id)
        if test and not Path(test[0].locator).is_file():
            raise MissingDataError(f"tiny-imagenet: {annotations} lists {test[0].sample_id} but "
                                   f"{test[0].locator} does not exist")
        if not train or not test:
            raise MissingDataError(f"tiny-imagenet: no {'train' if not train else 'val'} images "
                                   f"under {folder}")
        return {"train": train, "test": test}
