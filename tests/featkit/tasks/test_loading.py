"""The shared task loader: classes checked once, empty and non-finite splits refused in one
line that names the file, split, kind and number of bad rows (issue 15, item 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import featkit
from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.tasks.loading import FeatureSource, load_datasets

MODEL = "pixels:8"


@pytest.fixture()
def nan_cache(digits_cache, tmp_path):
    """A copy of the digits cache whose train split has two NaN rows and one inf row."""
    cache = tmp_path / "cache"
    shutil.copytree(digits_cache, cache)
    path = featkit.load(MODEL, "digits", "train", "visual", cache_dir=cache).path
    with h5py.File(path, "r+") as handle:
        data = handle["features/visual"]
        row = data[3]
        row[0] = np.nan
        data[3] = row
        data[10] = np.full(data.shape[1], np.nan, np.float32)
        row = data[11]
        row[2] = np.inf
        data[11] = row
    return cache, path


@pytest.mark.parametrize("argv", [
    ["probe", "linear", "--c-grid", "1"],
    ["probe", "knn"],
    ["perturb", "--steps", "1", "--eps", "0,0.1", "--c-grid", "1"],
    ["retrieval", "--query-split", "train"],
])
def test_every_task_refuses_non_finite_features(nan_cache, argv, capsys):
    cache, path = nan_cache
    code = main([*argv, "--model", MODEL, "--dataset", "digits", "--cache-dir", str(cache),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and "digits/train 'visual'" in err and "3 of 1211 rows" in err


def test_splits_with_different_classes_are_refused_once(digits_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(digits_cache, cache)
    path = featkit.load(MODEL, "digits", "val", "visual", cache_dir=cache).path
    with h5py.File(path, "r+") as handle:
        names = handle["class_names"][()]
        names[0] = b"zero"
        handle["class_names"][...] = names
    with pytest.raises(FeatkitError, match="the val and train cache files list different"):
        load_datasets(FeatureSource(MODEL, cache_dir=cache), ["digits"], ("train", "val"))


def test_merge_and_label_map_arguments_are_checked(digits_cache):
    source = FeatureSource(MODEL, cache_dir=digits_cache)
    with pytest.raises(FeatkitError, match="two or more datasets"):
        load_datasets(source, ["digits"], ("train",), merge=True)
    with pytest.raises(FeatkitError, match="names no dataset"):
        load_datasets(source, [], ("train",))


def test_an_empty_split_is_refused(tmp_path):
    from featkit.featureset import FeatureSet
    from featkit.tasks.loading import check_usable

    empty = FeatureSet(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), [], ["a"], {},
                       "visual", tmp_path / "test-x.h5")
    with pytest.raises(FeatkitError, match=r"test-x.h5: cub/test 'visual' features have no rows"):
        check_usable(empty, "cub", "test")


def test_decoded_images_name_a_broken_file(tmp_path):
    from featkit.datasets import open_dataset
    from featkit.datasets.decoded import DecodedImages
    from featkit.errors import BadImageError
    from featkit.testing.datasets import make_imagefolder

    folder = make_imagefolder(tmp_path / "f", n_classes=2, train_per_class=2, test_per_class=1)
    dataset = open_dataset("imagefolder", folder.root)
    sample = dataset.samples("test")[0]
    images = DecodedImages(dataset, [sample.sample_id], lambda image: np.zeros(1))
    Path(sample.locator).write_bytes(b"not an image")
    with pytest.raises(BadImageError, match=r"cannot decode .* for the image-space attack"):
        images[0:1]


def test_a_stale_second_file_is_a_warning_not_a_lock_out(tmp_path, capsys):
    """The dataset changed after a first extraction: both cache files match the model, the
    probe reads the newest (or the one --data-root names) and says so in the record."""
    import json

    from featkit.testing.datasets import make_imagefolder

    folder = make_imagefolder(tmp_path / "f", n_classes=3, train_per_class=6, val_per_class=2,
                              test_per_class=2)
    cache = tmp_path / "cache"
    featkit.extract(MODEL, "imagefolder", data_root=folder.root, cache_dir=cache,
                    progress=False, num_workers=0)
    next((folder.root / "train").rglob("*.png")).unlink()  # the train split changes
    featkit.extract(MODEL, "imagefolder", data_root=folder.root, cache_dir=cache,
                    progress=False, num_workers=0)
    out = tmp_path / "knn.json"
    argv = ["probe", "knn", "--model", MODEL, "--dataset", "imagefolder", "--k", "1",
            "--cache-dir", str(cache), "--no-progress", "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["counts"]["bank"] == 3 * 8 - 1
    assert any("train" in w and ".h5" in w for w in record["warnings"]), record["warnings"]
    assert main([*argv, "--data-root", str(folder.root)]) == 0
    assert json.loads(out.read_text())["counts"]["bank"] == 3 * 8 - 1
