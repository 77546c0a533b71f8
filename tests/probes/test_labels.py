"""Label-space merging across datasets and label maps within a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.labels import (
    FeatureSource,
    apply_label_map,
    build_label_map,
    check_same_features,
    merge_label_spaces,
    merged_vs_single,
)


def test_merge_offsets_and_namespaced_names():
    space, merged = merge_label_spaces(
        [
            ("cub", np.array([0, 2, 1]), ["Black_footed_Albatross", "Laysan_Albatross", "Sooty"]),
            ("cars", np.array([1, 0]), ["AM General Hummer", "Acura RL"]),
            ("aircraft", np.array([3]), ["707-320", "727-200", "737-200", "737-300"]),
        ]
    )
    assert space.datasets == ("cub", "cars", "aircraft")
    assert space.offsets == (0, 3, 5)
    assert space.sizes == (3, 2, 4)
    assert space.num_classes == 9
    assert space.class_names[0] == "cub/Black_footed_Albatross"
    assert space.class_names[3] == "cars/AM General Hummer"
    assert space.class_names[8] == "aircraft/737-300"
    assert merged[0].tolist() == [0, 2, 1]
    assert merged[1].tolist() == [4, 3]
    assert merged[2].tolist() == [8]
    assert list(space.class_range("cars")) == [3, 4]
    # every merged id names its own dataset's class
    assert [space.class_names[i] for i in merged[1]] == ["cars/Acura RL", "cars/AM General Hummer"]
    assert space.dataset_of(np.array([0, 2, 3, 4, 5, 8])).tolist() == [0, 0, 1, 1, 2, 2]


def test_merge_rejects_duplicates_bad_names_and_out_of_range_labels():
    with pytest.raises(FeatkitError, match="listed twice"):
        merge_label_spaces([("cub", np.array([0]), ["a"]), ("cub", np.array([0]), ["a"])])
    with pytest.raises(FeatkitError, match="free of"):
        merge_label_spaces([("a/b", np.array([0]), ["x"])])
    with pytest.raises(FeatkitError, match=r"labels of 'cars' must lie in \[0, 2\)"):
        merge_label_spaces([("cub", np.array([0]), ["a"]), ("cars", np.array([2]), ["x", "y"])])
    with pytest.raises(FeatkitError, match="at least one"):
        merge_label_spaces([])


def test_check_same_features_names_the_mismatch():
    same = [FeatureSource("cub", "eva", "visual", 768), FeatureSource("cars", "eva", "visual", 768)]
    check_same_features(same)
    with pytest.raises(FeatkitError, match=r"differ in model \(cub: eva, cars: dino\)"):
        check_same_features([same[0], FeatureSource("cars", "dino", "visual", 768)])
    with pytest.raises(FeatkitError, match="differ in kind"):
        check_same_features([same[0], FeatureSource("cars", "eva", "aligned", 768)])
    with pytest.raises(FeatkitError, match="differ in dim"):
        check_same_features([same[0], FeatureSource("cars", "eva", "visual", 1024)])


COLOURS = ["red", "pink", "orange", "yellow", "violet", "blue", "green"]
MEGACOIN_MERGE = {"pink": "red", "orange": "yellow", "violet": "blue"}


def test_label_map_megacoin_merge():
    labels = np.arange(len(COLOURS))
    new_labels, new_names = apply_label_map(labels, COLOURS, MEGACOIN_MERGE, "map.json")
    assert new_names == ("red", "yellow", "blue", "green")
    assert [new_names[i] for i in new_labels] == [
        "red", "red", "yellow", "yellow", "blue", "blue", "green"
    ]
    label_map = build_label_map(COLOURS, MEGACOIN_MERGE)
    assert label_map.merged == {
        "red": ("red", "pink"), "yellow": ("orange", "yellow"), "blue": ("violet", "blue")
    }
    # identity entries and an empty map change nothing
    same_labels, same_names = apply_label_map(labels, COLOURS, {"red": "red"})
    assert same_names == tuple(COLOURS) and same_labels.tolist() == labels.tolist()


def test_label_map_unknown_names_error_names_file_and_closest():
    with pytest.raises(FeatkitError) as err:
        build_label_map(COLOURS, {"pnik": "red", "orange": "yelow"}, source="map.json")
    message = str(err.value)
    assert "map.json" in message
    assert "'pnik' (did you mean pink?)" in message
    assert "'yelow' (did you mean yellow?)" in message
    assert "Valid names: red, pink, orange" in message


def test_label_map_rejects_chains_and_bad_json_shapes():
    with pytest.raises(FeatkitError, match="chained"):
        build_label_map(COLOURS, {"pink": "red", "red": "orange"}, source="m.json")
    with pytest.raises(FeatkitError, match="JSON object of class name -> class name"):
        build_label_map(COLOURS, {"pink": ["red"]}, source="m.json")
    with pytest.raises(FeatkitError, match="JSON object"):
        build_label_map(COLOURS, ["pink", "red"], source="m.json")  # type: ignore[arg-type]


def test_merged_vs_single_drop():
    rows, mean_drop = merged_vs_single(
        {"cub": 0.90, "cars": 0.80}, {"cub": 0.85, "cars": 0.81}
    )
    assert rows["cub"] == pytest.approx({"single": 0.90, "merged": 0.85, "drop": 0.05})
    assert rows["cars"]["drop"] == pytest.approx(-0.01)
    assert mean_drop == pytest.approx(0.02)
    with pytest.raises(ValueError):
        merged_vs_single({"cub": 0.9}, {"cars": 0.9})
