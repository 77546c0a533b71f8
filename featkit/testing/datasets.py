"""Tiny datasets written in each official on-disk layout, for tests, demos and notebooks.

Every ``make_<name>(root, ...)`` writes a few small, real, decodable images per class into
``root`` exactly as the official release (or torchvision) lays them out, and returns a
:class:`GeneratedDataset` saying what a reader must find: the root to open, the class names and
the official splits as ``(sample_id, label)`` in reader order. Images are class-dependent (a
coloured shape on a tinted background, plus seeded noise), so tiny models and probes can learn
them. :func:`write_truncated_jpeg` writes a broken image for bad-image tests.

CIFAR-100 and Flowers-102 files are md5-checked by torchvision; generated ones cannot match, so
open them inside :func:`torchvision_md5_bypassed`.
"""

from __future__ import annotations

import colorsys
import contextlib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MAKERS",
    "GeneratedDataset",
    "class_array",
    "class_image",
    "make_aircraft",
    "make_cars",
    "make_cifar100",
    "make_cub",
    "make_dataset",
    "make_dogs",
    "make_flowers",
    "make_food",
    "make_imagefolder",
    "make_manifest",
    "torchvision_md5_bypassed",
    "write_truncated_jpeg",
]


@dataclass
class GeneratedDataset:
    """What a generator wrote: the registered dataset ``name``, the ``root`` to open it with,
    ``class_names`` by label, and the official ``splits`` as ``(sample_id, label)`` lists."""

    name: str
    root: Path
    class_names: list[str]
    splits: dict[str, list[tuple[str, int]]]

    def ids(self, split: str) -> list[str]:
        return [sample_id for sample_id, _ in self.splits[split]]

    def labels(self, split: str) -> list[int]:
        return [label for _, label in self.splits[split]]


# -- images -------------------------------------------------------------------------------------


def class_array(label: int, index: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """An ``size x size x 3`` uint8 image for class ``label``: a shape (disc, square or triangle
    by ``label % 3``) in a class colour on a class-tinted background, jittered per ``index``, with
    Gaussian noise; deterministic in ``(seed, label, index)``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, label, index])
    hue = (label * 0.618034) % 1.0
    background = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.35, 0.9))
    foreground = tuple(int(255 * c) for c in colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.9, 0.55))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.2, 0.3)
    cx, cy = size * rng.uniform(0.35, 0.65, size=2)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    shape = label % 3
    if shape == 0:
        draw.ellipse(box, fill=foreground)
    elif shape == 1:
        draw.rectangle(box, fill=foreground)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=foreground)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 10.0, size=(size, size, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def class_image(label: int, index: int, size: int = 32, seed: int = 0):
    """:func:`class_array` as a PIL RGB image."""
    from PIL import Image

    return Image.fromarray(class_array(label, index, size, seed), mode="RGB")


def _write_image(path: Path, label: int, index: int, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = class_image(label, index, size, seed)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=90)
    else:
        image.save(path)


def write_truncated_jpeg(path: str | os.PathLike, size: int = 64, keep_fraction: float = 0.5) -> Path:
    """Write a JPEG cut off after ``keep_fraction`` of its bytes: it opens (the header is intact)
    but fails to decode, like a partially downloaded file."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(class_array(0, 0, size)).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return path


def _names(base: list[str], n: int, prefix: str) -> list[str]:
    return [base[i] if i < len(base) else f"{prefix}_{i:03d}" for i in range(n)]


#: image-index offsets so that the same position in different splits draws a different image
_SPLIT_OFFSET = {"train": 0, "val": 10_000, "test": 20_000}


def _counts(train: int, val: int, test: int) -> dict[str, int]:
    return {split: n for split, n in (("train", train), ("val", val), ("test", test)) if n > 0}


# -- official layouts ---------------------------------------------------------------------------

CUB_NAMES = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet"]


def make_cub(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
    nested: bool = True,
) -> GeneratedDataset:
    """CUB-200-2011: ``[root/CUB_200_2011/]`` ``images.txt``, ``image_class_labels.txt``,
    ``train_test_split.txt``, ``classes.txt`` and ``images/NNN.Name/Name_XXXX.jpg``. Train/test
    flags are shuffled within each class (not first-k), as in the official file."""
    root = Path(root)
    folder = root / "CUB_200_2011" if nested else root
    names = _names(CUB_NAMES, n_classes, "Bird")
    rng = np.random.default_rng(seed)
    images, labels, flags = [], [], []
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    per_class = train_per_class + test_per_class
    for label, name in enumerate(names):
        is_train = rng.permutation([1] * train_per_class + [0] * test_per_class)
        for j in range(per_class):
            relpath = f"{label + 1:03d}.{name}/{name}_{j + 1:04d}_{label}.jpg"
            _write_image(folder / "images" / relpath, label, j, image_size, seed)
            image_id = len(images) + 1
            images.append(f"{image_id} {relpath}")
            labels.append(f"{image_id} {label + 1}")
            flags.append(f"{image_id} {int(is_train[j])}")
            splits["train" if is_train[j] else "test"].append((relpath, label))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("".join(f"{i + 1} {i + 1:03d}.{n}\n" for i, n in enumerate(names)))
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(flags) + "\n")
    return GeneratedDataset("cub", root, names, splits)


DOG_NAMES = ["Chihuahua", "Shih-Tzu", "Maltese_dog", "Pekinese", "Japanese_spaniel"]


def _mat_cell(strings: list[str]) -> np.ndarray:
    """A MATLAB N x 1 cell of strings, as ``loadmat`` returns the official lists."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, text in enumerate(strings):
        cell[i, 0] = np.array([text])
    return cell


def make_dogs(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
    lists_dir: bool = True,
) -> GeneratedDataset:
    """Stanford Dogs: ``Images/<wnid>-<Name>/<wnid>_<n>.jpg`` and ``[lists/]train_list.mat``,
    ``test_list.mat``, ``file_list.mat`` with the official structure (``file_list`` and
    ``annotation_list`` N x 1 cells, ``labels`` N x 1 doubles, 1-based)."""
    from scipy.io import savemat

    root = Path(root)
    names = _names(DOG_NAMES, n_classes, "Dog")
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, name in enumerate(names):
        wnid = f"n02{85620 + 100 * label:06d}"
        for j in range(train_per_class + test_per_class):
            relpath = f"{wnid}-{name}/{wnid}_{1000 + 7 * j}.jpg"
            _write_image(root / "Images" / relpath, label, j, image_size, seed)
            splits["train" if j < train_per_class else "test"].append((relpath, label))
    lists = root / "lists" if lists_dir else root
    lists.mkdir(parents=True, exist_ok=True)
    for stem, entries in (("train_list", splits["train"]), ("test_list", splits["test"]),
                          ("file_list", splits["train"] + splits["test"])):
        files = [relpath for relpath, _ in entries]
        savemat(str(lists / f"{stem}.mat"), {
            "file_list": _mat_cell(files),
            "annotation_list": _mat_cell([f.rsplit(".", 1)[0] for f in files]),
            "labels": np.array([[label + 1.0] for _, label in entries], dtype=np.float64).reshape(-1, 1),
        })
    return GeneratedDataset("dogs", root, names, splits)


CAR_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Type-S 2008", "Audi R8 Coupe 2012"]


def make_cars(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
) -> GeneratedDataset:
    """Stanford Cars as torchvision reads it: ``root/stanford_cars/`` with ``devkit/cars_meta.mat``,
    ``devkit/cars_train_annos.mat``, ``cars_test_annos_withlabels.mat``, ``cars_train/NNNNN.jpg``
    and ``cars_test/NNNNN.jpg`` (annotations are 1 x N struct arrays with a 1-based ``class``)."""
    from scipy.io import savemat

    folder = Path(root) / "stanford_cars"
    names = _names(CAR_NAMES, n_classes, "Car")
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, per_class, images_dir, annos in (
        ("train", train_per_class, "cars_train", folder / "devkit" / "cars_train_annos.mat"),
        ("test", test_per_class, "cars_test", folder / "cars_test_annos_withlabels.mat"),
    ):
        order = [(label, j) for j in range(per_class) for label in range(n_classes)]  # classes interleaved
        records = np.zeros((1, len(order)), dtype=[(f, "O") for f in fields])
        splits[split] = []
        for k, (label, j) in enumerate(order):
            fname = f"{k + 1:05d}.jpg"
            _write_image(folder / images_dir / fname, label, _SPLIT_OFFSET[split] + j, image_size, seed)
            box = [np.array([[v]], dtype=np.uint16) for v in (1, 1, image_size, image_size)]
            records[0, k] = (*box, np.array([[label + 1]], dtype=np.uint8), fname)
            splits[split].append((f"{images_dir}/{fname}", label))
        annos.parent.mkdir(parents=True, exist_ok=True)
        savemat(str(annos), {"annotations": records})
    class_cell = np.empty((1, n_classes), dtype=object)
    for i, name in enumerate(names):
        class_cell[0, i] = name
    savemat(str(folder / "devkit" / "cars_meta.mat"), {"class_names": class_cell})
    return GeneratedDataset("cars", Path(root), names, splits)


AIRCRAFT_NAMES = ["707-320", "F/A-18", "Cessna 172", "A300B4", "DHC-8-100"]


def make_aircraft(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 3,
    val_per_class: int = 2,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
) -> GeneratedDataset:
    """FGVC-Aircraft as torchvision reads it: ``root/fgvc-aircraft-2013b/data/`` with
    ``variants.txt``, ``images_variant_{train,val,trainval,test}.txt`` (``<id> <variant>`` lines;
    variants may contain spaces and slashes) and ``images/<id>.jpg``."""
    data = Path(root) / "fgvc-aircraft-2013b" / "data"
    names = _names(AIRCRAFT_NAMES, n_classes, "Aircraft")
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("".join(f"{n}\n" for n in names))
    splits: dict[str, list[tuple[str, int]]] = {}
    lines: dict[str, list[str]] = {}
    image_id = 1000000
    for split, per_class in _counts(train_per_class, val_per_class, test_per_class).items():
        splits[split], lines[split] = [], []
        for _ in range(per_class):
            for label, name in enumerate(names):
                image_id += 13
                _write_image(data / "images" / f"{image_id:07d}.jpg", label, image_id, image_size, seed)
                splits[split].append((f"data/images/{image_id:07d}.jpg", label))
                lines[split].append(f"{image_id:07d} {name}")
    lines["trainval"] = lines.get("train", []) + lines.get("val", [])
    for split in ("train", "val", "trainval", "test"):
        (data / f"images_variant_{split}.txt").write_text("".join(f"{line}\n" for line in lines.get(split, [])))
    return GeneratedDataset("aircraft", Path(root), names, splits)


def make_flowers(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 3,
    val_per_class: int = 2,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
) -> GeneratedDataset:
    """Oxford Flowers-102 as torchvision reads it: ``root/flowers-102/`` with ``jpg/image_NNNNN.jpg``,
    ``imagelabels.mat`` (1 x N, 1-based) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``).
    Class names are torchvision's 102 names; labels use the first ``n_classes``. The md5 sums
    cannot match the official files: open it inside :func:`torchvision_md5_bypassed`."""
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    folder = Path(root) / "flowers-102"
    rng = np.random.default_rng(seed)
    counts = _counts(train_per_class, val_per_class, test_per_class)
    assignment = [(split, label) for split, n in counts.items() for label in range(n_classes) for _ in range(n)]
    assignment = [assignment[i] for i in rng.permutation(len(assignment))]  # splits interleaved by image id
    labels = np.zeros((1, len(assignment)), dtype=np.uint8)
    set_ids: dict[str, list[int]] = {split: [] for split in counts}
    for k, (split, label) in enumerate(assignment):
        image_id = k + 1
        _write_image(folder / "jpg" / f"image_{image_id:05d}.jpg", label, image_id, image_size, seed)
        labels[0, k] = label + 1
        set_ids[split].append(image_id)
    savemat(str(folder / "imagelabels.mat"), {"labels": labels})
    key = {"train": "trnid", "val": "valid", "test": "tstid"}
    savemat(str(folder / "setid.mat"), {
        key[split]: np.array([set_ids.get(split, [])], dtype=np.uint16) for split in key
    })
    splits = {
        split: [(f"jpg/image_{i:05d}.jpg", assignment[i - 1][1]) for i in ids]
        for split, ids in set_ids.items()
    }
    return GeneratedDataset("flowers", Path(root), list(Flowers102.classes), splits)


FOOD_NAMES = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"]


def make_food(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
) -> GeneratedDataset:
    """Food-101 as torchvision reads it: ``root/food-101/`` with ``images/<class>/<id>.jpg`` and
    ``meta/{train,test}.json`` (``{class: ["<class>/<id>", ...]}``), ``meta/classes.txt``."""
    folder = Path(root) / "food-101"
    names = sorted(_names(FOOD_NAMES, n_classes, "food"))
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[tuple[str, int]]] = {}
    image_id = 100000
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        meta: dict[str, list[str]] = {}
        splits[split] = []
        for label, name in enumerate(names):
            meta[name] = []
            for _ in range(per_class):
                image_id += 37
                _write_image(folder / "images" / name / f"{image_id}.jpg", label, image_id, image_size, seed)
                meta[name].append(f"{name}/{image_id}")
                splits[split].append((f"images/{name}/{image_id}.jpg", label))
        (folder / "meta" / f"{split}.json").write_text(json.dumps(meta))
        (folder / "meta" / f"{split}.txt").write_text("".join(f"{e}\n" for v in meta.values() for e in v))
    (folder / "meta" / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    return GeneratedDataset("food", Path(root), names, splits)


CIFAR_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver"]


def make_cifar100(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    test_per_class: int = 2,
    seed: int = 0,
) -> GeneratedDataset:
    """CIFAR-100 as torchvision reads it: ``root/cifar-100-python/{train,test,meta}`` pickles
    (``data`` N x 3072 uint8 in CHW order, ``fine_labels``, ``fine_label_names``), 32 x 32 images
    in shuffled order. The md5 sums cannot match the official files: open it inside
    :func:`torchvision_md5_bypassed`."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    names = _names(CIFAR_NAMES, n_classes, "class")
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = [label for label in range(n_classes) for _ in range(per_class)]
        labels = [labels[i] for i in rng.permutation(len(labels))]
        data = np.stack([
            class_array(label, _SPLIT_OFFSET[split] + k, 32, seed).transpose(2, 0, 1).reshape(-1)
            for k, label in enumerate(labels)
        ]) if labels else np.zeros((0, 3072), dtype=np.uint8)
        entry = {
            "filenames": [f"generated_{split}_{k:05d}.png" for k in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels,
            "coarse_labels": [label // 5 for label in labels],
            "data": data,
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(entry, handle)
        splits[split] = [(f"{split}/{k:05d}", label) for k, label in enumerate(labels)]
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]}, handle)
    return GeneratedDataset("cifar100", Path(root), names, splits)


@contextlib.contextmanager
def torchvision_md5_bypassed() -> Iterator[None]:
    """Within the block, torchvision's CIFAR and Flowers-102 readers accept files whose md5 sum is
    not the official one (only their existence is checked), so generated layouts can be read."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.flowers102 as flowers102

    def exists(fpath, md5=None) -> bool:
        return os.path.isfile(fpath)

    originals = [(module, module.check_integrity) for module in (cifar, flowers102)]
    try:
        for module, _ in originals:
            module.check_integrity = exists
        yield
    finally:
        for module, original in originals:
            module.check_integrity = original


# -- generic layouts ----------------------------------------------------------------------------

GENERIC_NAMES = ["cat", "dog", "fox", "owl", "yak"]


def make_imagefolder(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    val_per_class: int = 0,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
    ext: str = "png",
) -> GeneratedDataset:
    """``root/<split>/<class>/<class>_<n>.<ext>`` (a ``val/`` folder only when ``val_per_class``)."""
    root = Path(root)
    names = _names(GENERIC_NAMES, n_classes, "class")
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, per_class in _counts(train_per_class, val_per_class, test_per_class).items():
        splits[split] = []
        for label, name in enumerate(names):
            for j in range(per_class):
                relpath = f"{split}/{name}/{name}_{j:03d}.{ext}"
                _write_image(root / relpath, label, _SPLIT_OFFSET[split] + j, image_size, seed)
                splits[split].append((relpath, label))
    return GeneratedDataset("imagefolder", root, names, splits)


def make_manifest(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 4,
    val_per_class: int = 0,
    test_per_class: int = 2,
    image_size: int = 32,
    seed: int = 0,
    labels: str = "index",
    classes_file: str | None = "plain",
    first_id: int = 1,
    header: bool = False,
) -> GeneratedDataset:
    """FG-BMK-style manifests: ``root/<split>.csv`` of ``relpath,label`` lines over images in
    ``root/images/<class>/``. ``labels``: ``"index"`` (integers) or ``"name"``; ``classes_file``:
    None, ``"plain"`` (one name per line; integer labels are 0-based) or ``"ids"`` (``<id> <name>``
    lines numbered from ``first_id``; integer labels are those ids)."""
    root = Path(root)
    names = _names(GENERIC_NAMES, n_classes, "class")
    if labels not in ("index", "name") or classes_file not in (None, "plain", "ids"):
        raise ValueError("labels must be 'index' or 'name'; classes_file None, 'plain' or 'ids'")
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, per_class in _counts(train_per_class, val_per_class, test_per_class).items():
        rows = ["relpath,label"] if header else []
        splits[split] = []
        for j in range(per_class):
            for label, name in enumerate(names):
                relpath = f"images/{name}/{split}_{j:03d}.jpg"
                _write_image(root / relpath, label, _SPLIT_OFFSET[split] + j, image_size, seed)
                if labels == "name":
                    written = name
                else:
                    written = str(label + first_id if classes_file == "ids" else label)
                rows.append(f"{relpath},{written}")
                splits[split].append((relpath, label))
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    if classes_file == "plain":
        (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    elif classes_file == "ids":
        (root / "classes.txt").write_text("".join(f"{i + first_id} {n}\n" for i, n in enumerate(names)))
    return GeneratedDataset("manifest", root, names, splits)


#: generator per registered dataset name
MAKERS: dict[str, Callable[..., GeneratedDataset]] = {
    "cub": make_cub,
    "dogs": make_dogs,
    "cars": make_cars,
    "aircraft": make_aircraft,
    "flowers": make_flowers,
    "food": make_food,
    "cifar100": make_cifar100,
    "imagefolder": make_imagefolder,
    "manifest": make_manifest,
}


def make_dataset(name: str, root: str | os.PathLike, **kwargs) -> GeneratedDataset:
    """Write the tiny ``name`` layout into ``root`` (see :data:`MAKERS`)."""
    if name not in MAKERS:
        raise KeyError(f"no generator for dataset '{name}' (have: {', '.join(MAKERS)})")
    return MAKERS[name](root, **kwargs)
