"""ImageNet-family, Pets, CIFAR-10 and Tiny-ImageNet readers on generated trees in each official
layout: the reader's class order, the wnid each label stands for, and the samples it lists."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.datasets import list_datasets, open_dataset
from featkit.datasets.base import DatasetFormatError
from featkit.datasets.imagenet import imagenet_class_names, imagenet_wnids, readable_names
from featkit.errors import MissingDataError, UnknownNameError
from featkit.testing import imagenet as gen
from featkit.testing.datasets import torchvision_md5_bypassed


def _listed(ds, split):
    return [(s.sample_id, s.label) for s in ds.samples(split)]


def test_the_shipped_class_lists():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and imagenet_class_names()[0] == "tench"
    assert readable_names(["n01443537", "x"]) == ["goldfish", "x"]
    assert set(gen.MAKERS) <= set(list_datasets())


@pytest.mark.parametrize("layout", ["folders", "devkit", "kaggle"])
def test_imagenet_in_each_val_layout(tmp_path, layout):
    made = gen.make_imagenet(tmp_path, train_per_class=4, test_per_class=2, val_layout=layout)
    ds = open_dataset("imagenet", tmp_path)
    assert ds.class_names == list(imagenet_wnids())
    assert ds.splits == ("train", "val", "test")
    assert _listed(ds, "test") == made.splits["test"]
    # the label is the wnid's ImageNet index, whatever the ILSVRC2012_ID of the devkit says
    for sample in ds.samples("test"):
        wnid = ds.class_names[sample.label]
        assert sample.label == imagenet_wnids().index(wnid)
    assert sorted(_listed(ds, "train") + _listed(ds, "val")) == made.splits["train"]
    assert {ds.class_names[label] for _, label in _listed(ds, "test")} == set(gen.DEFAULT_WNIDS)


def test_imagenet_flat_val_without_labels_and_stray_folders(tmp_path):
    gen.make_imagenet(tmp_path, val_layout="devkit")
    (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
     ).unlink()
    with pytest.raises(MissingDataError, match="no labels were found"):
        open_dataset("imagenet", tmp_path).samples("test")
    other = tmp_path / "other"
    gen.make_imagenet(other)
    (other / "train" / "not_a_wnid").mkdir()
    with pytest.raises(DatasetFormatError, match="not a class folder"):
        open_dataset("imagenet", other).samples("train")
    with pytest.raises(MissingDataError, match="expected"):
        open_dataset("imagenet", tmp_path / "missing").samples("test")


@pytest.mark.parametrize("variant, name", [("matched-frequency", "imagenetv2"),
                                           ("threshold0.7", "imagenetv2-threshold0.7"),
                                           ("top-images", "imagenetv2-top-images")])
def test_imagenetv2_folders_are_class_indices(tmp_path, variant, name):
    made = gen.make_imagenetv2(tmp_path, variant=variant)
    for root in (tmp_path, tmp_path / f"imagenetv2-{variant}-format-val"):
        ds = open_dataset(name, root)
        assert ds.splits == ("test",)
        assert ds.class_names == list(imagenet_wnids())
        assert _listed(ds, "test") == made.splits["test"]
    with pytest.raises(UnknownNameError, match="no split 'train'"):
        ds.samples("train")


@pytest.mark.parametrize("name, make, n_classes", [
    ("imagenet-sketch", gen.make_imagenet_sketch, 1000),
    ("imagenet-r", gen.make_imagenet_r, 200),
    ("imagenet-a", gen.make_imagenet_a, 200),
])
def test_wnid_folder_sets(tmp_path, name, make, n_classes):
    made = make(tmp_path)
    ds = open_dataset(name, tmp_path)
    assert len(ds.class_names) == n_classes and ds.class_names == sorted(ds.class_names)
    assert ds.splits == ("test",)
    assert _listed(ds, "test") == made.splits["test"]
    assert ds.reference_classes()[ds.class_names[0]] == (ds.class_names[0],)
    if name == "imagenet-r":  # imagenet-testbed's class sublist of ImageNet-R starts 1, 2, 4
        assert [imagenet_wnids().index(w) for w in ds.class_names[:3]] == [1, 2, 4]


def test_objectnet_reads_its_mappings_and_keeps_the_overlapping_classes(tmp_path):
    made = gen.make_objectnet(tmp_path)
    ds = open_dataset("objectnet", tmp_path)
    assert ds.class_names == ["fish_tank", "stingray_toy"]  # air_freshener maps to nothing
    assert ds.reference_classes() == {"fish_tank": ("n01443537", "n01484850"),
                                      "stingray_toy": ("n01498041",)}
    assert _listed(ds, "test") == made.splits["test"]
    image = ds.load_image(ds.samples("test")[0])
    assert image.size == (32, 32)  # 36 x 36 on disk, the 2-pixel border cropped
    (tmp_path / "objectnet-1.0" / "mappings" / "objectnet_to_imagenet_1k.json").write_text(
        '{"Fish tank": "no such class"}')
    with pytest.raises(DatasetFormatError, match="not a line"):
        open_dataset("objectnet", tmp_path).samples("test")


def test_tiny_imagenet_val_annotations(tmp_path):
    made = gen.make_tiny_imagenet(tmp_path)
    ds = open_dataset("tiny-imagenet", tmp_path)
    assert ds.class_names == sorted(gen.DEFAULT_WNIDS[:3])  # wnids.txt is not sorted
    assert _listed(ds, "test") == made.splits["test"]
    assert sorted(_listed(ds, "train") + _listed(ds, "val")) == made.splits["train"]


def test_pets_and_cifar10_through_torchvision(tmp_path):
    pets = gen.make_pets(tmp_path / "pets")
    ds = open_dataset("pets", tmp_path / "pets")
    assert ds.class_names == pets.class_names == ["Abyssinian", "American Bulldog", "Bengal"]
    assert _listed(ds, "test") == pets.splits["test"]
    assert ds.load_image(ds.samples("test")[0]).size == (32, 32)
    cifar = gen.make_cifar10(tmp_path / "cifar", train_per_class=5)
    with torchvision_md5_bypassed():
        ds = open_dataset("cifar10", tmp_path / "cifar")
        assert ds.class_names == list(gen.CIFAR10_NAMES)
        assert _listed(ds, "test") == cifar.splits["test"]
        image = np.asarray(ds.load_image(ds.samples("test")[0]))
    assert image.shape == (32, 32, 3)


@pytest.mark.parametrize("name", sorted(gen.MAKERS))
def test_every_generator_reads_back(tmp_path, name):
    made = gen.MAKERS[name](tmp_path)
    with torchvision_md5_bypassed():
        ds = open_dataset(name, made.root)
        assert ds.class_names == made.class_names
        assert _listed(ds, "test") == made.splits["test"]
