"""Dataset readers: every official layout is generated in a temp dir (featkit.testing.datasets)
and read back with the right ids, labels, class names and split sizes; missing or malformed data
gives one-line errors; readers pickle (DataLoader workers) and decode after unpickling."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featkit.datasets import SPLITS, Sample, carve_val, list_datasets, open_dataset
from featkit.datasets.base import DatasetFormatError
from featkit.errors import MissingDataError, UnknownNameError
from featkit.testing.datasets import (
    MAKERS,
    class_array,
    make_aircraft,
    make_cars,
    make_cifar100,
    make_cub,
    make_dogs,
    make_flowers,
    make_food,
    make_imagefolder,
    make_manifest,
    torchvision_md5_bypassed,
    write_truncated_jpeg,
)

LAYOUTS = sorted(MAKERS)
OFFICIAL_VAL = {"aircraft", "flowers"}
#: the first file each reader looks for, relative to the root it was given
FIRST_EXPECTED = {
    "cub": "images.txt",
    "dogs": "lists/train_list.mat",
    "cars": "stanford_cars/devkit/cars_train_annos.mat",
    "aircraft": "fgvc-aircraft-2013b/data/variants.txt",
    "flowers": "flowers-102/imagelabels.mat",
    "food": "food-101/meta/train.json",
    "cifar100": "cifar-100-python/train",
    "imagefolder": "train",
    "manifest": "train.csv",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Every layout, written once for the module."""
    base = tmp_path_factory.mktemp("layouts")
    return {name: MAKERS[name](base / name) for name in LAYOUTS}


@pytest.fixture
def md5_bypass():
    # Generated CIFAR-100 pickles and Flowers-102 .mat files cannot have the official md5 sums that
    # torchvision checks; the bypass only replaces that check by an existence check while a test
    # runs. test_md5_check_is_kept shows the reader keeps torchvision's check on real reads.
    with torchvision_md5_bypassed():
        yield


def pairs(samples: list[Sample]) -> list[tuple[str, int]]:
    return [(s.sample_id, s.label) for s in samples]


def expected_val_size(labels: list[int]) -> int:
    """carve_val's documented rule, computed independently: max(1, round(10 %)) per class of >= 2."""
    return sum(max(1, int(round(0.1 * n))) for n in Counter(labels).values() if n >= 2)


# -- every layout -------------------------------------------------------------------------------


def test_all_datasets_registered():
    """Every registered reader has a generator of its official layout (here, or the ImageNet
    family's in featkit.testing.imagenet), so none goes untested."""
    from featkit.testing.imagenet import MAKERS as IMAGENET_MAKERS

    assert set(list_datasets()) == set(LAYOUTS) | set(IMAGENET_MAKERS) | {"digits"}
    assert all(list_datasets().values())


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_reads_back(name, generated, md5_bypass):
    g = generated[name]
    ds = open_dataset(name, g.root)
    assert ds.name == name
    assert ds.class_names == g.class_names
    assert ds.splits == SPLITS
    assert pairs(ds.samples("test")) == g.splits["test"]
    if name in OFFICIAL_VAL:
        assert pairs(ds.samples("train")) == g.splits["train"]
        assert pairs(ds.samples("val")) == g.splits["val"]
        return
    official = g.splits["train"]
    val = pairs(ds.samples("val"))
    val_ids = {i for i, _ in val}
    # val carved from train: disjoint, together exactly the official train split, order kept
    assert pairs(ds.samples("train")) == [p for p in official if p[0] not in val_ids]
    assert val == [p for p in official if p[0] in val_ids]
    assert len(val) == expected_val_size([label for _, label in official])
    # stratified: every class gives max(1, round(10 %)) of its train images to val
    per_class = Counter(label for _, label in official)
    assert Counter(label for _, label in val) == {c: max(1, round(0.1 * n)) for c, n in per_class.items()}
    assert not val_ids & {s.sample_id for s in ds.samples("test")}


@pytest.mark.parametrize("name", LAYOUTS)
def test_val_is_deterministic_across_opens(name, generated, md5_bypass):
    g = generated[name]
    first = {split: pairs(open_dataset(name, g.root).samples(split)) for split in SPLITS}
    second = {split: pairs(open_dataset(name, g.root).samples(split)) for split in SPLITS}
    assert first == second


@pytest.mark.parametrize("name", LAYOUTS)
def test_ids_name_the_decoded_image(name, generated, md5_bypass):
    ds = open_dataset(name, generated[name].root)
    for split in SPLITS:
        sample = ds.samples(split)[-1]
        image = ds.load_image(sample)
        assert image.size == (32, 32)
        pixels = np.asarray(image.convert("RGB"))
        if name == "cifar100":  # in-memory pickles: the image is exactly the generated array
            prefix, index = sample.sample_id.split("/")
            offset = {"train": 0, "test": 20_000}[prefix]
            np.testing.assert_array_equal(pixels, class_array(sample.label, offset + int(index)))
        else:
            assert Path(ds.image_path(sample)).as_posix().endswith(sample.sample_id)
            with Image.open(ds.image_path(sample)) as on_disk:
                np.testing.assert_array_equal(pixels, np.asarray(on_disk.convert("RGB")))


@pytest.mark.parametrize("name", LAYOUTS + ["digits"])
def test_pickles_and_loads_after_unpickling(name, generated, md5_bypass):
    ds = open_dataset(name, generated[name].root if name in generated else None)
    fresh = pickle.loads(pickle.dumps(ds))  # before listing
    listed = ds.samples("val")
    clone = pickle.loads(pickle.dumps(ds))  # after listing (torchvision objects are dropped)
    assert pairs(clone.samples("val")) == pairs(listed) == pairs(fresh.samples("val"))
    original = np.asarray(ds.load_image(listed[0]))
    np.testing.assert_array_equal(np.asarray(clone.load_image(listed[0])), original)
    np.testing.assert_array_equal(np.asarray(fresh.load_image(listed[0])), original)


@pytest.mark.parametrize("name", LAYOUTS)
def test_missing_data_is_one_line(name, tmp_path):
    root = tmp_path / "absent"
    with pytest.raises(MissingDataError) as info:
        open_dataset(name, root).samples("train")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}:")
    assert str(root / FIRST_EXPECTED[name]) in message
    assert "--data-root" in message


def test_default_root_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATKIT_DATA", str(tmp_path))
    with pytest.raises(MissingDataError, match=str(tmp_path / "cub" / "images.txt")):
        open_dataset("cub").samples("test")
    g = make_cub(tmp_path / "cub")
    assert pairs(open_dataset("cub").samples("test")) == g.splits["test"]


def test_unknown_split_and_dataset(generated):
    ds = open_dataset("cub", generated["cub"].root)
    with pytest.raises(UnknownNameError, match="no split 'trainval'"):
        ds.samples("trainval")
    with pytest.raises(UnknownNameError, match="did you mean cub"):
        open_dataset("cubs")


# -- fine-grained specifics ---------------------------------------------------------------------


def test_cub_root_may_be_the_folder_or_its_parent(tmp_path):
    nested = make_cub(tmp_path / "nested")
    flat = make_cub(tmp_path / "flat", nested=False)
    for root in (nested.root, nested.root / "CUB_200_2011", flat.root):
        ds = open_dataset("cub", root)
        assert ds.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
        assert pairs(ds.samples("test")) == nested.splits["test"]


def test_cub_inconsistent_annotations_name_file_and_line(tmp_path):
    g = make_cub(tmp_path, nested=False)
    labels = (tmp_path / "image_class_labels.txt").read_text().splitlines()
    (tmp_path / "image_class_labels.txt").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"images.txt:{len(labels)}: image id {len(labels)} has no line"):
        open_dataset("cub", g.root).samples("train")


def test_cub_images_missing_is_one_line(tmp_path):
    g = make_cub(tmp_path)
    for image in (tmp_path / "CUB_200_2011" / "images").rglob("*.jpg"):
        image.unlink()
    with pytest.raises(MissingDataError, match="images.txt lists .* but .* does not exist"):
        open_dataset("cub", g.root).samples("train")


def test_dogs_lists_follow_the_official_mat_structure(tmp_path):
    from scipy.io import loadmat

    from featkit.datasets.fine_grained import _mat_strings

    g = make_dogs(tmp_path, lists_dir=False)
    mat = loadmat(str(tmp_path / "train_list.mat"))
    assert mat["file_list"].dtype == object and mat["file_list"].shape == (12, 1)
    assert isinstance(mat["file_list"][0, 0], np.ndarray) and mat["file_list"][0, 0].shape == (1,)
    assert mat["labels"].dtype == np.float64 and mat["labels"].min() == 1.0
    squeezed = loadmat(str(tmp_path / "train_list.mat"), squeeze_me=True)["file_list"]
    assert _mat_strings(mat["file_list"]) == _mat_strings(squeezed) == g.ids("train")
    ds = open_dataset("dogs", tmp_path)  # lists at the root, as lists.tar extracts
    assert ds.class_names == ["Chihuahua", "Shih-Tzu", "Maltese_dog"]
    assert pairs(ds.samples("test")) == g.splits["test"]


def test_cars_root_may_be_the_torchvision_folder(tmp_path):
    g = make_cars(tmp_path)
    ds = open_dataset("cars", tmp_path / "stanford_cars")
    assert pairs(ds.samples("test")) == g.splits["test"]
    (tmp_path / "stanford_cars").rename(tmp_path / "cars_data")
    with pytest.raises(MissingDataError, match="rename the folder to stanford_cars"):
        open_dataset("cars", tmp_path / "cars_data").samples("train")


@pytest.mark.parametrize("maker,name", [(make_cifar100, "cifar100"), (make_flowers, "flowers")])
def test_md5_check_is_kept(maker, name, tmp_path):
    g = maker(tmp_path)
    with pytest.raises(MissingDataError) as info:
        open_dataset(name, g.root).samples("train")
    assert "md5" in str(info.value) and "\n" not in str(info.value)


# -- generic layouts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels,classes_file,first_id,expected_names",
    [
        ("index", None, 1, ["0", "1", "2"]),
        ("name", None, 1, ["cat", "dog", "fox"]),
        ("index", "plain", 1, ["cat", "dog", "fox"]),
        ("index", "ids", 1, ["cat", "dog", "fox"]),
        ("index", "ids", 0, ["cat", "dog", "fox"]),
        ("name", "ids", 1, ["cat", "dog", "fox"]),
        ("name", "plain", 1, ["cat", "dog", "fox"]),
    ],
)
def test_manifest_label_styles(tmp_path, labels, classes_file, first_id, expected_names):
    g = make_manifest(tmp_path, labels=labels, classes_file=classes_file, first_id=first_id, header=True)
    ds = open_dataset("manifest", tmp_path)
    assert ds.class_names == expected_names
    assert pairs(ds.samples("test")) == g.splits["test"]
    assert sorted(pairs(ds.samples("train") + ds.samples("val"))) == sorted(g.splits["train"])


def test_manifest_named_labels_sort_and_official_val(tmp_path):
    g = make_manifest(tmp_path, labels="name", classes_file=None, val_per_class=2)
    (tmp_path / "test.csv").write_text("images/fox/test_000.jpg,fox\nimages/cat/test_000.jpg,cat\n")
    ds = open_dataset("manifest", tmp_path)
    assert pairs(ds.samples("val")) == g.splits["val"]
    assert pairs(ds.samples("train")) == g.splits["train"]
    assert pairs(ds.samples("test")) == [("images/fox/test_000.jpg", 2), ("images/cat/test_000.jpg", 0)]


@pytest.mark.parametrize(
    "classes_file,bad_row,match",
    [
        ("plain", "images/cat/test_000.jpg,3", r"test.csv:3: label 3 outside 0..2 \(classes.txt has 3 names"),
        (None, "images/cat/test_000.jpg,-1", r"test.csv:3: label -1 outside 0..2 \(labels are 0-based"),
        ("ids", "images/cat/test_000.jpg,0", r"test.csv:3: label 0 is not a class id of classes.txt \(ids 1..3\)"),
        ("plain", "images/cat/test_000.jpg,wolf", r"test.csv:3: label 'wolf' does not match the other labels \(e.g. .*train.csv:1 '0'\); labels must be all integers"),
        ("plain", "images/cat/test_000.jpg", r"test.csv:3: expected 'relpath,label'"),
    ],
)
def test_manifest_bad_label_names_file_and_line(tmp_path, classes_file, bad_row, match):
    make_manifest(tmp_path, classes_file=classes_file, test_per_class=1)
    rows = (tmp_path / "test.csv").read_text().splitlines()
    rows.insert(2, bad_row)
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetFormatError, match=match) as info:
        open_dataset("manifest", tmp_path).samples("test")
    assert "\n" not in str(info.value)


def test_manifest_unknown_class_name(tmp_path):
    make_manifest(tmp_path, labels="name", classes_file="ids")
    with (tmp_path / "val.csv").open("w") as handle:
        handle.write("images/cat/test_000.jpg,cat\n\nimages/cat/test_000.jpg,Cat\n")
    with pytest.raises(DatasetFormatError, match=r"val.csv:3: label 'Cat' is not in classes.txt"):
        open_dataset("manifest", tmp_path).samples("val")


def test_manifest_duplicate_class_and_missing_image(tmp_path):
    make_manifest(tmp_path, classes_file="plain")
    (tmp_path / "classes.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(DatasetFormatError, match=r"classes.txt:3: class name 'cat' appears twice"):
        open_dataset("manifest", tmp_path).samples("test")
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\n")
    (tmp_path / "test.csv").write_text("pictures/cat.jpg,0\n")
    with pytest.raises(MissingDataError, match=r"test.csv:1 names pictures/cat.jpg but .* does not exist"):
        open_dataset("manifest", tmp_path).samples("test")


def test_imagefolder_edge_cases(tmp_path):
    g = make_imagefolder(tmp_path, val_per_class=1, ext="jpg")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "train" / "cat" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / ".ipynb_checkpoints" / "x.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "test" / "zebra").mkdir()  # a class seen only in test still gets a label
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "zebra" / "z.png")
    ds = open_dataset("imagefolder", tmp_path)
    assert ds.class_names == ["cat", "dog", "fox", "zebra"]
    assert pairs(ds.samples("train")) == g.splits["train"]
    assert pairs(ds.samples("val")) == g.splits["val"]
    assert pairs(ds.samples("test")) == g.splits["test"] + [("test/zebra/z.png", 3)]


def test_imagefolder_without_test_split(tmp_path):
    make_imagefolder(tmp_path, test_per_class=0)
    with pytest.raises(MissingDataError, match=r"no test split under .*test/<class>/<image>"):
        open_dataset("imagefolder", tmp_path).samples("train")


def test_truncated_jpeg_fails_to_decode(tmp_path):
    make_imagefolder(tmp_path, n_classes=2, train_per_class=2, test_per_class=1, ext="jpg")
    bad = write_truncated_jpeg(tmp_path / "test" / "cat" / "broken.jpg")
    with Image.open(bad) as image:  # the header is intact, so it opens ...
        assert image.size == (64, 64)
    ds = open_dataset("imagefolder", tmp_path)
    sample = next(s for s in ds.samples("test") if s.sample_id == "test/cat/broken.jpg")
    with pytest.raises(OSError):  # ... but decoding fails (the error extraction reports)
        ds.load_image(sample)
    assert ds.image_path(sample) == str(bad)


def test_truncated_jpeg_in_a_torchvision_layout(tmp_path):
    g = make_cars(tmp_path)
    first = g.splits["train"][0][0]
    write_truncated_jpeg(tmp_path / "stanford_cars" / first, size=32)
    ds = open_dataset("cars", tmp_path)
    sample = next(s for s in ds.samples("train") + ds.samples("val") if s.sample_id == first)
    with pytest.raises(OSError):
        ds.load_image(sample)


def test_torchvision_layouts_decode_through_the_one_path(tmp_path):
    """Files of torchvision's layouts are decoded by content through featkit's decode path: a
    16-bit PNG saved under a .jpg name keeps its range (torchvision's loader clips it to white)."""
    g = make_cars(tmp_path)
    first = g.splits["test"][0][0]
    grey16 = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "stanford_cars" / first, format="PNG")
    ds = open_dataset("cars", tmp_path)
    sample = next(s for s in ds.samples("test") if s.sample_id == first)
    pixels = np.asarray(ds.load_image(sample))
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_array_equal(pixels[..., 0], np.rint(grey16 * (255 / 65535)).astype(np.uint8))


# -- integrity at read time: each problem is one line naming the file (and line) -----------------


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def _cub_files(tmp_path) -> Path:
    make_cub(tmp_path, nested=False)
    return tmp_path


def _rewrite(path: Path, edit) -> list[str]:
    lines = path.read_text().splitlines()
    lines = edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.mark.parametrize("conflicting", [True, False])
def test_cub_duplicate_label_line_names_file_and_line(tmp_path, conflicting):
    folder = _cub_files(tmp_path)
    # image 1 relabelled by a second line: today the last line wins silently
    lines = _rewrite(folder / "image_class_labels.txt",
                     lambda lines: [*lines, "1 3" if conflicting else lines[0]])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("cub", folder).samples("train")
    assert f"image_class_labels.txt:{len(lines)}: id 1 appears twice (first on line 1)" in _one_line(info)


def test_cub_duplicate_image_id_names_file_and_line(tmp_path):
    folder = _cub_files(tmp_path)
    _rewrite(folder / "images.txt", lambda lines: [lines[0], lines[1].replace("2 ", "1 ", 1), *lines[2:]])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("cub", folder).samples("train")
    assert "images.txt:2: id 1 appears twice (first on line 1)" in _one_line(info)


def test_cub_same_image_under_two_ids(tmp_path):
    folder = _cub_files(tmp_path)
    lines = (folder / "images.txt").read_text().splitlines()
    relpath = lines[0].split(" ", 1)[1]
    _rewrite(folder / "images.txt", lambda lines: [lines[0], f"2 {relpath}", *lines[2:]])
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("cub", folder).samples("train")
    assert f"images.txt:2: {relpath} is listed twice (first on line 1)" in _one_line(info)


def test_cub_non_utf8_byte_names_file_and_line(tmp_path):
    folder = _cub_files(tmp_path)
    data = (folder / "images.txt").read_bytes().split(b"\n")
    data[2] = data[2].replace(b"/", b"/\xff", 1)  # a Latin-1 byte, as a mis-encoded file has
    (folder / "images.txt").write_bytes(b"\n".join(data))
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("cub", folder).samples("train")
    message = _one_line(info)
    assert f"{folder / 'images.txt'}:3: byte 0xff" in message and "not UTF-8" in message


def test_cub_non_utf8_byte_is_one_cli_line(tmp_path):
    import os
    import subprocess
    import sys

    folder = _cub_files(tmp_path)
    (folder / "classes.txt").write_bytes(b"1 001.Black_footed_Albatross\n2 002.Laysan_Alb\xe9tross\n")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "featkit", "extract", "--model", "pixels:8", "--dataset", "cub",
         "--data-root", str(folder), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("featkit: error:")]
    assert len(errors) == 1 and "classes.txt:2: byte 0xe9" in errors[0]


def test_cub_byte_order_mark_is_accepted(tmp_path):
    folder = _cub_files(tmp_path)
    expected = pairs(open_dataset("cub", folder).samples("test"))
    (folder / "images.txt").write_bytes(b"\xef\xbb\xbf" + (folder / "images.txt").read_bytes())
    assert pairs(open_dataset("cub", folder).samples("test")) == expected


def test_dogs_image_in_train_and_test_is_leakage(tmp_path):
    from scipy.io import loadmat, savemat

    g = make_dogs(tmp_path)
    leaked = g.splits["train"][1]
    test_list = tmp_path / "lists" / "test_list.mat"
    mat = loadmat(str(test_list))
    files = [str(np.asarray(f).ravel()[0]) for f in mat["file_list"].ravel()] + [leaked[0]]
    cell = np.empty((len(files), 1), dtype=object)
    for i, name in enumerate(files):
        cell[i, 0] = np.array([name])
    labels = np.vstack([mat["labels"], [[leaked[1] + 1.0]]])
    savemat(str(test_list), {"file_list": cell, "annotation_list": cell, "labels": labels})
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("dogs", tmp_path).samples("test")
    message = _one_line(info)
    assert str(tmp_path / "Images" / leaked[0]) in message
    assert "in both the train and the test split" in message


@pytest.mark.parametrize("split,where", [("test", "in both the train and the test split"),
                                         ("train", "listed twice in the train split")])
def test_aircraft_image_listed_twice(tmp_path, split, where):
    g = make_aircraft(tmp_path)
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    first_train = (data / "images_variant_train.txt").read_text().splitlines()[0]
    with (data / f"images_variant_{split}.txt").open("a") as handle:
        handle.write(first_train + "\n")
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("aircraft", tmp_path).samples("train")
    message = _one_line(info)
    assert message.startswith("aircraft: ") and where in message
    assert str(tmp_path / "fgvc-aircraft-2013b" / g.splits["train"][0][0]) in message


@pytest.mark.parametrize("maker,name,relpath,line", [
    (make_aircraft, "aircraft", "fgvc-aircraft-2013b/data/images_variant_val.txt", 2),
    (make_aircraft, "aircraft", "fgvc-aircraft-2013b/data/variants.txt", 1),
    (make_food, "food", "food-101/meta/test.json", 1),
])
def test_torchvision_text_files_must_be_utf8(tmp_path, maker, name, relpath, line):
    maker(tmp_path)
    path = tmp_path / relpath
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1][:3] + b"\xfe" + lines[line - 1][3:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetFormatError) as info:
        open_dataset(name, tmp_path).samples("train")
    assert f"{path}:{line}: byte 0xfe" in _one_line(info)


# -- digits and carve_val -----------------------------------------------------------------------


def test_digits_splits():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    ds = open_dataset("digits", "ignored/path")
    assert str(ds.root) == "sklearn:digits"
    sizes = {split: len(ds.samples(split)) for split in SPLITS}
    assert sizes["test"] == 450  # ceil(0.25 * 1797), sklearn's rounding
    assert sizes["train"] + sizes["val"] == 1797 - 450
    train_val = ds.samples("train") + ds.samples("val")
    assert sizes["val"] == expected_val_size([s.label for s in train_val])
    ids = [s.sample_id for split in SPLITS for s in ds.samples(split)]
    assert len(set(ids)) == 1797
    for s in train_val[:50] + ds.samples("test")[:50]:
        assert s.label == targets[s.locator]
    test_share = Counter(s.label for s in ds.samples("test"))
    for digit, n in Counter(targets).items():  # stratified
        assert abs(test_share[digit] - 0.25 * n) <= 1
    again = open_dataset("digits")
    assert all(pairs(again.samples(split)) == pairs(ds.samples(split)) for split in SPLITS)
    image = ds.load_image(ds.samples("test")[0])
    assert image.size == (8, 8) and image.mode == "L" and np.asarray(image).max() > 128


def test_carve_val_is_stratified_seeded_and_order_free():
    samples = [Sample(f"c{label}_{i:02d}", label, None) for label, n in ((0, 25), (1, 4), (2, 1)) for i in range(n)]
    train, val = carve_val(samples)
    assert Counter(s.label for s in val) == {0: 2, 1: 1}  # round(2.5) == 2, max(1, 0), singleton kept
    assert {s.sample_id for s in train} | {s.sample_id for s in val} == {s.sample_id for s in samples}
    assert not {s.sample_id for s in train} & {s.sample_id for s in val}
    _, val_reversed = carve_val(samples[::-1])
    assert {s.sample_id for s in val_reversed} == {s.sample_id for s in val}
    _, val_other_seed = carve_val(samples, seed=1)
    assert {s.sample_id for s in val_other_seed} != {s.sample_id for s in val}
    _, val_30 = carve_val(samples, fraction=0.3)
    assert Counter(s.label for s in val_30) == {0: 8, 1: 1}
