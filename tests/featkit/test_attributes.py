"""Attribute, hierarchy, attribute-map and pairs readers, on generated trees
(featkit.testing.attributes): values read back as written, one-line errors naming file:line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featkit.datasets import open_dataset
from featkit.datasets.attributes import (
    EVERY_ATTRIBUTE,
    NO_VALUE,
    find_cub_attribute_files,
    read_attr_map,
    read_cub_attributes,
    read_sample_attributes,
    read_taxonomy,
)
from featkit.datasets.base import DatasetFormatError, Sample
from featkit.datasets.pairs import read_pairs
from featkit.errors import FeatkitError, MissingDataError
from featkit.testing.attributes import (
    make_attribute_manifest,
    make_cub_attributes,
    write_pairs,
    write_taxonomy,
)
from featkit.testing.datasets import make_cub, make_manifest

MEGACOIN = {"fgd": ("red", "pink", "blue"), "bgd": ("white", "green"),
            "env": ("indoor", "in_the_sky")}


@pytest.fixture(scope="module")
def cub_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    dataset = make_cub(root, n_classes=3, train_per_class=3, test_per_class=2, image_size=8)
    return dataset, make_cub_attributes(dataset, seed=1)


def test_sample_attributes_default_empty_and_outside_equality():
    assert Sample("a", 0, None).attributes == {}
    with_attrs = Sample("a", 0, None, {"fgd": "red"})
    assert with_attrs == Sample("a", 0, None)  # ids, labels and locators decide equality
    assert hash(with_attrs) == hash(Sample("a", 0, None))


def test_cub_attributes_read_back(cub_tree):
    dataset, truth = cub_tree
    attributes = read_cub_attributes(dataset.root)
    assert list(attributes.names) == truth.names
    assert list(attributes.sample_ids) == truth.sample_ids
    np.testing.assert_array_equal(attributes.present, truth.present)
    np.testing.assert_array_equal(attributes.certainty, truth.certainty)
    assert attributes.group_names == ("has_bill_shape", "has_wing_color", "has_size")
    assert attributes.values[0] == "curved_(up_or_down)"
    # the sample ids are the cub reader's: every cached row finds its attributes
    reader = open_dataset("cub", dataset.root)
    ids = [s.sample_id for split in reader.splits for s in reader.samples(split)]
    rows = attributes.rows(ids)
    assert [attributes.sample_ids[r] for r in rows] == ids


def test_cub_attribute_names_found_inside_the_folder_and_lines_with_six_fields(tmp_path):
    dataset = make_cub(tmp_path, n_classes=2, train_per_class=2, test_per_class=1, image_size=8,
                       nested=False)
    truth = make_cub_attributes(dataset, names_next_to_folder=False, extra_field_every=7)
    assert find_cub_attribute_files(tmp_path) == (truth.labels_path, truth.names_path)
    np.testing.assert_array_equal(read_cub_attributes(tmp_path).present, truth.present)


def test_cub_categorical_view_joins_present_values(cub_tree):
    dataset, truth = cub_tree
    attributes = read_cub_attributes(dataset.root)
    wing = attributes.categorical("has_wing_color")
    columns = [i for i, n in enumerate(truth.names) if n.startswith("has_wing_color::")]
    for i, sid in enumerate(truth.sample_ids):
        shown = [truth.names[c].split("::")[1] for c in columns if truth.present[i, c]]
        assert wing[sid] == ("+".join(shown) if shown else NO_VALUE)
    table = read_sample_attributes("cub", dataset.root)
    assert "has_size" in table.names
    assert table.column("has_wing_color", truth.sample_ids[:2]) == [wing[s] for s in
                                                                   truth.sample_ids[:2]]
    with pytest.raises(FeatkitError, match="no attribute group 'has_wing_colour'.*did you mean"):
        attributes.columns_of("has_wing_colour")


@pytest.mark.parametrize("line, match", [
    ("1 999 1 3 2.0", "attribute id not in"),
    ("1 1 2 3 2.0", "is_present must be 0 or 1"),
    ("1 1 1 7 2.0", "certainty id must be 1..4"),
    ("1 1 x 3 2.0", "expected '<image id> <attribute id>"),
])
def test_cub_attribute_errors_name_file_and_line(tmp_path, line, match):
    dataset = make_cub(tmp_path, n_classes=2, train_per_class=1, test_per_class=1, image_size=8)
    truth = make_cub_attributes(dataset)
    lines = truth.labels_path.read_text().splitlines()
    lines[3] = line
    truth.labels_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"image_attribute_labels.txt:4: {match}"):
        read_cub_attributes(dataset.root)


def test_cub_without_attribute_files(tmp_path):
    dataset = make_cub(tmp_path, n_classes=2, train_per_class=1, test_per_class=1, image_size=8)
    assert find_cub_attribute_files(dataset.root) is None
    with pytest.raises(MissingDataError, match="no attribute annotations"):
        read_cub_attributes(dataset.root)
    assert read_sample_attributes("cub", dataset.root).names == ()


def test_manifest_attribute_columns(tmp_path):
    dataset, truth = make_attribute_manifest(tmp_path, MEGACOIN, spurious="env")
    reader = open_dataset("manifest", tmp_path)
    for split in ("train", "val", "test"):
        samples = reader.samples(split)
        assert [s.sample_id for s in samples] == dataset.ids(split)
        assert all(dict(s.attributes) == truth[s.sample_id] for s in samples)
    table = read_sample_attributes("manifest", tmp_path)
    assert table.names == ("fgd", "bgd", "env")
    ids = dataset.ids("train")
    assert table.column("env", ids) == [truth[i]["env"] for i in ids]
    # the spurious attribute follows the class in train
    assert [truth[i]["env"] for i in ids] == [MEGACOIN["env"][label % 2]
                                              for label in dataset.labels("train")]


def test_manifest_attributes_do_not_change_ids_or_labels(tmp_path):
    plain = make_manifest(tmp_path / "plain", n_classes=2, train_per_class=2, test_per_class=1,
                          image_size=8, header=True)
    make_attribute_manifest(tmp_path / "attrs", {"env": ("a", "b")}, n_classes=2,
                            train_per_class=2, val_per_class=0, test_per_class=1, image_size=8)
    for split in ("train", "val", "test"):
        a = open_dataset("manifest", plain.root).samples(split)
        b = open_dataset("manifest", tmp_path / "attrs").samples(split)
        assert [(s.sample_id, s.label) for s in a] == [(s.sample_id, s.label) for s in b]


def test_manifest_without_header_ignores_extra_columns_and_empty_cells(tmp_path):
    dataset = make_manifest(tmp_path, n_classes=2, train_per_class=1, test_per_class=1,
                            image_size=8)
    rows = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(f"{r},extra" for r in rows) + "\n")
    reader = open_dataset("manifest", tmp_path)
    assert all(not s.attributes for s in reader.samples("train"))
    lines = ["relpath,label,env,fgd"] + [f"{r.split(',')[0]},{r.split(',')[1]},,red" for r in rows]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    samples = open_dataset("manifest", tmp_path).samples("train")
    assert [dict(s.attributes) for s in samples] == [{"fgd": "red"}] * len(samples)
    assert [s.sample_id for s in samples] == dataset.ids("train")


@pytest.mark.parametrize("header, row_suffix, match", [
    ("relpath,label,env,", "", "header column 4 has no name"),
    ("relpath,label,env,env", "", "header column name 'env' appears twice"),
    ("relpath,label,env", ",a,b", "4 columns, but the header names 3"),
])
def test_manifest_attribute_header_errors(tmp_path, header, row_suffix, match):
    make_manifest(tmp_path, n_classes=2, train_per_class=1, test_per_class=1, image_size=8)
    rows = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text(
        "\n".join([header] + [r + row_suffix for r in rows]) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"train.csv:\d+: {match}"):
        open_dataset("manifest", tmp_path).samples("train")


def test_unknown_attribute_lists_the_known_ones(tmp_path):
    make_attribute_manifest(tmp_path, MEGACOIN, image_size=8)
    table = read_sample_attributes("manifest", tmp_path)
    with pytest.raises(FeatkitError, match=r"no attribute 'evn' \(did you mean env\?\) "
                                           r"\(attributes: fgd, bgd, env\)"):
        table.column("evn", ["x"])


def test_attr_map_shapes(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"pink": "red", "orange": "yellow"}))
    assert read_attr_map(flat) == {EVERY_ATTRIBUTE: {"pink": "red", "orange": "yellow"}}
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"fgd": {"pink": "red"}, "bgd": {"violet": "blue"}}))
    assert read_attr_map(nested) == {"fgd": {"pink": "red"}, "bgd": {"violet": "blue"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fgd": {"pink": 3}}))
    with pytest.raises(FeatkitError, match="attribute map .*bad.json: expected"):
        read_attr_map(bad)
    with pytest.raises(FeatkitError, match="does not exist"):
        read_attr_map(tmp_path / "none.json")


def test_taxonomy_read_back_and_mapping(tmp_path):
    names = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani"]
    table = write_taxonomy(tmp_path / "tax.csv", names, ("species", "genus", "family", "order"))
    taxonomy = read_taxonomy(tmp_path / "tax.csv")
    assert taxonomy.levels == ("species", "genus", "family", "order")
    assert dict(taxonomy.table) == table
    assert taxonomy.mapping(names, "genus") == {
        "Black_footed_Albatross": "genus_0", "Laysan_Albatross": "genus_0",
        "Sooty_Albatross": "genus_1", "Groove_billed_Ani": "genus_1"}
    # CUB's numbered folder names find their class too
    assert taxonomy.mapping(["001.Black_footed_Albatross"], "family") == {
        "001.Black_footed_Albatross": "family_0"}
    with pytest.raises(FeatkitError, match="1 of 1 classes are not listed.*'Rock_Wren'"):
        taxonomy.mapping(["Rock_Wren"], "genus")
    with pytest.raises(FeatkitError, match="no level 'genera'.*did you mean genus"):
        taxonomy.mapping(names, "genera")


@pytest.mark.parametrize("text, match", [
    ("species\na\n", "two or more distinct levels"),
    ("species,genus\na,g\na,g\n", "tax.csv:3: class 'a' is listed twice"),
    ("species,genus\na,\n", "tax.csv:2: expected 2 non-empty names"),
    ("species,genus,family\na,g,f1\nb,g,f2\n", "tax.csv:3: genus 'g' has family 'f2' here but "
                                               "'f1' on line 2"),
])
def test_taxonomy_errors(tmp_path, text, match):
    (tmp_path / "tax.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match=match):
        read_taxonomy(tmp_path / "tax.csv")


def test_pairs_read_back_and_errors(tmp_path):
    path = write_pairs(tmp_path / "pairs.csv", [("a.jpg", "b.jpg", True), ("a.jpg", "c.jpg", False)])
    pairs = read_pairs(path)
    assert pairs.first == ("a.jpg", "a.jpg") and pairs.second == ("b.jpg", "c.jpg")
    assert pairs.same.tolist() == [True, False]
    path.write_text("a,b,yes\na,c,false\n")
    assert read_pairs(path).same.tolist() == [True, False]  # no header: the first line is a pair
    path.write_text("image_a,image_b,same\na,b,1\na,c,maybe\n")
    with pytest.raises(DatasetFormatError, match="pairs.csv:3: expected 'image_a,image_b,same'"):
        read_pairs(path)
    path.write_text("a,b,1\nc,d,1\n")
    with pytest.raises(FeatkitError, match="needs both same .* and different"):
        read_pairs(path)
