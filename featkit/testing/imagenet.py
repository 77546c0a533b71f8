"""Tiny ImageNet-family trees in each official layout, plus Pets, CIFAR-10 and Tiny-ImageNet.

Every ``make_<name>(root, ...)`` writes a few small decodable images per class exactly as the
release lays them out and returns a :class:`~featkit.testing.datasets.GeneratedDataset` (the
reader's full class list, and the test split as ``(sample_id, label)`` in reader order). The
image of a class is drawn from its ImageNet class index, so the same wnid looks alike in every
set and a probe trained on the ImageNet tree transfers to the shifted trees.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from featkit.datasets.imagenet import imagenet_class_names, imagenet_wnids
from featkit.testing.datasets import _SPLIT_OFFSET, GeneratedDataset, _write_image, class_array

__all__ = [
    "DEFAULT_WNIDS",
    "MAKERS",
    "make_cifar10",
    "make_imagenet",
    "make_imagenet_a",
    "make_imagenet_r",
    "make_imagenet_sketch",
    "make_imagenetv2",
    "make_objectnet",
    "make_pets",
    "make_tiny_imagenet",
]

#: Classes the trees use by default: in ImageNet-R, and (the first two) in ImageNet-A too.
DEFAULT_WNIDS = ("n01498041", "n01531178", "n01443537", "n01484850")


def _index(wnid: str) -> int:
    return imagenet_wnids().index(wnid)


def _class_tree(folder: Path, base: Path, classes: Sequence[tuple[str, int]], per_class: int,
                split: str, *, image_size: int, seed: int, ext: str = "JPEG",
                inner: str = "", prefix: str = "") -> list[tuple[str, int, int]]:
    """``folder/<name>/[inner/]<prefix><j>.<ext>`` for each ``(folder name, ImageNet index)``;
    returns ``(sample id, index, position in classes)`` sorted by sample id."""
    written = []
    for position, (name, index) in enumerate(classes):
        for j in range(per_class):
            path = folder / name / inner / f"{prefix or name + '_'}{j:04d}.{ext}"
            _write_image(path, index, _SPLIT_OFFSET[split] + j, image_size, seed)
            written.append((path.relative_to(base).as_posix(), index, position))
    return sorted(written)


def make_imagenet(root: str | os.PathLike, wnids: Sequence[str] = DEFAULT_WNIDS,
                  train_per_class: int = 6, test_per_class: int = 3, *, val_layout: str = "folders",
                  image_size: int = 32, seed: int = 0) -> GeneratedDataset:
    """ILSVRC-2012 with only ``wnids``: ``train/<wnid>/<wnid>_<j>.JPEG`` and the official val as
    ``val/<wnid>/`` (``val_layout="folders"``), the flat ``val/ILSVRC2012_val_<8 digits>.JPEG``
    with the devkit's ground truth and ``meta.mat`` (``"devkit"``; ILSVRC2012_IDs are not the
    class indices, as in the release), or Kaggle's ``ILSVRC/Data/CLS-LOC/`` with
    ``LOC_val_solution.csv`` (``"kaggle"``)."""
    if val_layout not in ("folders", "devkit", "kaggle"):
        raise ValueError("val_layout must be 'folders', 'devkit' or 'kaggle'")
    root = Path(root)
    folder = root / "ILSVRC" / "Data" / "CLS-LOC" if val_layout == "kaggle" else root
    classes = [(w, _index(w)) for w in wnids]
    train = _class_tree(folder / "train", folder, classes, train_per_class, "train",
                        image_size=image_size, seed=seed)
    if val_layout == "folders":
        test = _class_tree(folder / "val", folder, classes, test_per_class, "test",
                           image_size=image_size, seed=seed, prefix="ILSVRC2012_val_")
    else:
        order = [(w, j) for j in range(test_per_class) for w in wnids]  # classes interleaved
        test = []
        for k, (wnid, j) in enumerate(order):
            stem = f"ILSVRC2012_val_{k + 1:08d}"
            _write_image(folder / "val" / f"{stem}.JPEG", _index(wnid), _SPLIT_OFFSET["test"] + j,
                         image_size, seed)
            test.append((f"val/{stem}.JPEG", _index(wnid), 0))
        if val_layout == "devkit":
            _write_devkit(root / "ILSVRC2012_devkit_t12" / "data", [w for w, _ in order])
        else:
            rows = ["ImageId,PredictionString"] + [
                f"ILSVRC2012_val_{k + 1:08d},{w} 1 1 30 30" for k, (w, _) in enumerate(order)]
            (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    splits = {"train": [(i, label) for i, label, _ in train],
              "test": [(i, label) for i, label, _ in test]}
    return GeneratedDataset("imagenet", root, list(imagenet_wnids()), splits)


def ilsvrc2012_id(wnid: str) -> int:
    """The (made-up, not sorted-order) ILSVRC2012_ID the generated devkit gives a class."""
    return (_index(wnid) * 7 + 3) % 1000 + 1


def _write_devkit(data: Path, labels: Sequence[str]) -> None:
    """``meta.mat`` (leaf synsets with ILSVRC2012_ID, WNID, num_children, plus one inner
    synset) and the ground truth: one ILSVRC2012_ID per val image, in file order."""
    from scipy.io import savemat

    data.mkdir(parents=True, exist_ok=True)
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.zeros((1001, 1), dtype=fields)
    for wnid, name in zip(imagenet_wnids(), imagenet_class_names()):
        synsets[ilsvrc2012_id(wnid) - 1, 0] = (ilsvrc2012_id(wnid), wnid, name, 0)
    synsets[1000, 0] = (1001, "n00001740", "entity", 3)
    savemat(str(data / "meta.mat"), {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ilsvrc2012_id(w)}\n" for w in labels))


def _shifted(name: str, root: Path, folder: Path, classes, per_class: int, class_names,
             *, image_size: int, seed: int, ext: str = "jpg") -> GeneratedDataset:
    test = _class_tree(folder, folder, classes, per_class, "test", image_size=image_size,
                       seed=seed + 1, ext=ext)
    label = {i: class_names.index(c) for c, i in classes}
    return GeneratedDataset(name, root, list(class_names),
                            {"test": [(i, label[index]) for i, index, _ in test]})


def make_imagenetv2(root: str | os.PathLike, wnids: Sequence[str] = DEFAULT_WNIDS,
                    per_class: int = 3, *, variant: str = "matched-frequency",
                    image_size: int = 32, seed: int = 0) -> GeneratedDataset:
    """``root/imagenetv2-<variant>-format-val/<class index>/<hash>.jpeg``."""
    names = {"matched-frequency": "imagenetv2", "threshold0.7": "imagenetv2-threshold0.7",
             "top-images": "imagenetv2-top-images"}
    folder = Path(root) / f"imagenetv2-{variant}-format-val"
    classes = [(str(_index(w)), _index(w)) for w in wnids]
    test = _class_tree(folder, folder, classes, per_class, "test", image_size=image_size,
                       seed=seed + 1, ext="jpeg", prefix="0a1b2c")
    return GeneratedDataset(names[variant], Path(root), list(imagenet_wnids()),
                            {"test": [(i, index) for i, index, _ in test]})


def make_imagenet_sketch(root: str | os.PathLike, wnids: Sequence[str] = DEFAULT_WNIDS,
                         per_class: int = 3, *, image_size: int = 32,
                         seed: int = 0) -> GeneratedDataset:
    """``root/sketch/<wnid>/<n>.JPEG``."""
    classes = [(w, _index(w)) for w in wnids]
    return _shifted("imagenet-sketch", Path(root), Path(root) / "sketch", classes, per_class,
                    list(imagenet_wnids()), image_size=image_size, seed=seed, ext="JPEG")


def _subset(name: str, data_file: str, folder: str, root, wnids, per_class, image_size, seed):
    from featkit.datasets.imagenet import DATA

    names = [w for w in (DATA / data_file).read_text().split()]
    missing = [w for w in wnids if w not in names]
    if missing:
        raise ValueError(f"{', '.join(missing)} are not {name} classes")
    classes = [(w, _index(w)) for w in wnids]
    return _shifted(name, Path(root), Path(root) / folder, classes, per_class, names,
                    image_size=image_size, seed=seed)


def make_imagenet_r(root: str | os.PathLike, wnids: Sequence[str] = DEFAULT_WNIDS,
                    per_class: int = 3, *, image_size: int = 32,
                    seed: int = 0) -> GeneratedDataset:
    """``root/imagenet-r/<wnid>/<n>.jpg`` for classes of ImageNet-R's 200."""
    return _subset("imagenet-r", "imagenet_r_wnids.txt", "imagenet-r", root, wnids, per_class,
                   image_size, seed)


def make_imagenet_a(root: str | os.PathLike, wnids: Sequence[str] = DEFAULT_WNIDS[:2],
                    per_class: int = 3, *, image_size: int = 32,
                    seed: int = 0) -> GeneratedDataset:
    """``root/imagenet-a/<wnid>/<n>.jpg`` (plus its README.txt) for classes of ImageNet-A's 200."""
    made = _subset("imagenet-a", "imagenet_a_wnids.txt", "imagenet-a", root, wnids, per_class,
                   image_size, seed)
    (Path(root) / "imagenet-a" / "README.txt").write_text("ImageNet-A (generated)\n")
    return made


#: ObjectNet classes of the default tree: folder -> (label, the ImageNet wnids it maps to).
OBJECTNET_CLASSES = {
    "fish_tank": ("Fish tank", ("n01443537", "n01484850")),
    "stingray_toy": ("Stingray toy", ("n01498041",)),
}


def make_objectnet(root: str | os.PathLike,
                   classes: Mapping[str, tuple[str, Sequence[str]]] | None = None,
                   per_class: int = 3, *, unmapped: Sequence[str] = ("air_freshener",),
                   image_size: int = 32, seed: int = 0) -> GeneratedDataset:
    """``root/objectnet-1.0/images/<folder>/<n>.png`` and ``mappings/`` as the release has them:
    ``folder_to_objectnet_label.json``, ``objectnet_to_imagenet_1k.json`` (label -> ImageNet
    names joined by ``"; "``), ``imagenet_to_label_2012_v2`` (one name per ImageNet 2012 id,
    in an order unlike the sorted wnids) and ``pytorch_to_imagenet_2012_id.json`` (class index
    -> line). ``unmapped`` folders have images but no ImageNet class (the reader skips them)."""
    classes = dict(OBJECTNET_CLASSES if classes is None else classes)
    folder = Path(root) / "objectnet-1.0"
    mappings = folder / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    line_of = {i: (i * 7 + 3) % 1000 for i in range(1000)}  # a permutation of 0..999
    lines = [""] * 1000
    for i, (wnid, name) in enumerate(zip(imagenet_wnids(), imagenet_class_names())):
        lines[line_of[i]] = f"{name} ({wnid})"
    (mappings / "imagenet_to_label_2012_v2").write_text("\n".join(lines) + "\n")
    (mappings / "pytorch_to_imagenet_2012_id.json").write_text(
        json.dumps({str(i): line for i, line in line_of.items()}))
    labels = {f: label for f, (label, _) in classes.items()}
    labels.update({f: f.replace("_", " ").title() for f in unmapped})
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(labels))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps({
        label: "; ".join(lines[line_of[_index(w)]] for w in wnids)
        for label, wnids in classes.values()}))
    names = sorted(classes)
    written = []
    for position, name in enumerate(names):
        style = _index(classes[name][1][0])
        for j in range(per_class):
            path = folder / "images" / name / f"{j:04d}.png"
            _write_image(path, style, _SPLIT_OFFSET["test"] + j, image_size + 4, seed + 2)
            written.append((path.relative_to(folder).as_posix(), position))
    for name in unmapped:
        _write_image(folder / "images" / name / "0000.png", 999, 0, image_size, seed)
    return GeneratedDataset("objectnet", Path(root), names, {"test": sorted(written)})


def make_tiny_imagenet(root: str | os.PathLike, wnids: Sequence[str] = DEFAULT_WNIDS[:3],
                       train_per_class: int = 4, val_per_class: int = 2, *, image_size: int = 16,
                       seed: int = 0) -> GeneratedDataset:
    """``root/tiny-imagenet-200/`` with ``wnids.txt`` (unsorted, as released), ``words.txt``,
    ``train/<wnid>/images/<wnid>_<n>.JPEG`` and ``val/images/val_<n>.JPEG`` listed in
    ``val/val_annotations.txt``."""
    folder = Path(root) / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in reversed(wnids)))
    (folder / "words.txt").write_text("".join(
        f"{w}\t{n}\n" for w, n in zip(imagenet_wnids(), imagenet_class_names()) if w in wnids))
    names = sorted(wnids)
    train = _class_tree(folder / "train", folder, [(w, _index(w)) for w in names],
                        train_per_class, "train", image_size=image_size, seed=seed,
                        inner="images")
    rows, test = [], []
    for k, (wnid, j) in enumerate((w, j) for j in range(val_per_class) for w in wnids):
        _write_image(folder / "val" / "images" / f"val_{k}.JPEG", _index(wnid),
                     _SPLIT_OFFSET["test"] + j, image_size, seed)
        rows.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t{image_size - 1}\t{image_size - 1}")
        test.append((f"val/images/val_{k}.JPEG", names.index(wnid)))
    (folder / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return GeneratedDataset("tiny-imagenet", Path(root), names, {
        "train": [(i, names.index(i.split("/")[1])) for i, _, _ in train],
        "test": sorted(test)})


PET_BREEDS = ("Abyssinian", "american_bulldog", "Bengal", "great_pyrenees")


def make_pets(root: str | os.PathLike, n_classes: int = 3, train_per_class: int = 3,
              test_per_class: int = 2, *, image_size: int = 32, seed: int = 0
              ) -> GeneratedDataset:
    """``root/oxford-iiit-pet/images/<Breed>_<n>.jpg`` and ``annotations/{trainval,test}.txt``
    (``<image> <class id> <species> <breed id>``, ids 1-based, cats capitalised)."""
    folder = Path(root) / "oxford-iiit-pet"
    breeds = list(PET_BREEDS[:n_classes])
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, file, per_class in (("train", "trainval", train_per_class),
                                   ("test", "test", test_per_class)):
        lines, splits[split] = [], []
        for label, breed in enumerate(breeds):
            for j in range(per_class):
                image = f"{breed}_{_SPLIT_OFFSET[split] + j + 1}"
                _write_image(folder / "images" / f"{image}.jpg", label, _SPLIT_OFFSET[split] + j,
                             image_size, seed)
                species = 1 if breed[0].isupper() else 2
                lines.append(f"{image} {label + 1} {species} {label + 1}")
                splits[split].append((f"images/{image}.jpg", label))
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        (folder / "annotations" / f"{file}.txt").write_text("\n".join(lines) + "\n")
    names = [" ".join(part.title() for part in b.split("_")) for b in breeds]
    return GeneratedDataset("pets", Path(root), names, splits)


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def make_cifar10(root: str | os.PathLike, n_classes: int = 3, train_per_class: int = 4,
                 test_per_class: int = 2, seed: int = 0) -> GeneratedDataset:
    """``root/cifar-10-batches-py/`` with ``data_batch_1..5`` (the train images spread over the
    five), ``test_batch`` and ``batches.meta``. The md5 sums cannot match the official files:
    open it inside :func:`featkit.testing.datasets.torchvision_md5_bypassed`."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(labels: list[int], split: str, offset: int) -> dict:
        data = np.zeros((len(labels), 3072), dtype=np.uint8)
        for k, label in enumerate(labels):
            data[k] = class_array(label, _SPLIT_OFFSET[split] + offset + k, 32, seed
                                  ).transpose(2, 0, 1).reshape(-1)
        return {"batch_label": split, "labels": labels, "data": data,
                "filenames": [f"generated_{split}_{offset + k}.png" for k in range(len(labels))]}

    train = [label for label in range(n_classes) for _ in range(train_per_class)]
    train = [train[i] for i in rng.permutation(len(train))]
    chunks = np.array_split(np.arange(len(train)), 5)
    for b, chunk in enumerate(chunks, start=1):
        with open(folder / f"data_batch_{b}", "wb") as handle:
            pickle.dump(batch([train[i] for i in chunk], "train", int(chunk[0]) if len(chunk)
                              else 0), handle)
    test = [label for label in range(n_classes) for _ in range(test_per_class)]
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch(test, "test", 0), handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": list(CIFAR10_NAMES), "num_vis": 3072}, handle)
    return GeneratedDataset("cifar10", Path(root), list(CIFAR10_NAMES), {
        "train": [(f"train/{k:05d}", label) for k, label in enumerate(train)],
        "test": [(f"test/{k:05d}", label) for k, label in enumerate(test)]})


#: generator per registered dataset name (the sets of this module)
MAKERS = {
    "imagenet": make_imagenet,
    "imagenetv2": make_imagenetv2,
    "imagenetv2-threshold0.7": lambda root, **kw: make_imagenetv2(root, variant="threshold0.7",
                                                                  **kw),
    "imagenetv2-top-images": lambda root, **kw: make_imagenetv2(root, variant="top-images", **kw),
    "imagenet-sketch": make_imagenet_sketch,
    "imagenet-r": make_imagenet_r,
    "imagenet-a": make_imagenet_a,
    "objectnet": make_objectnet,
    "tiny-imagenet": make_tiny_imagenet,
    "pets": make_pets,
    "cifar10": make_cifar10,
}
