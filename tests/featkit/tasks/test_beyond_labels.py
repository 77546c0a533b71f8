"""The dg, attributes, taxonomy and pairs tasks end to end on real caches of generated trees
(pixel features): attributes matched by sample id, records whose numbers follow from what they
save, holdouts and value merges applied, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import featkit
from featkit.errors import FeatkitError
from featkit.tasks import attributes, dg, linear, pairs, taxonomy
from featkit.tasks.loading import FeatureSource
from featkit.testing.attributes import (
    make_attribute_manifest,
    make_cub_attributes,
    write_pairs,
    write_taxonomy,
)
from featkit.testing.datasets import make_cub

MODEL = "pixels:8"
MEGACOIN = {"fgd": ("red", "pink", "blue"), "env": ("indoor", "in_the_sky")}
FAST = dict(seeds=2, steps=15, burnin=5)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("megacoin")
    cache = tmp_path_factory.mktemp("cache")
    dataset, truth = make_attribute_manifest(root, MEGACOIN, n_classes=4, train_per_class=8,
                                             val_per_class=3, test_per_class=4, spurious="env",
                                             image_size=16)
    featkit.extract(MODEL, "manifest", data_root=root, cache_dir=cache, progress=False,
                    num_workers=0)
    return dataset, truth, FeatureSource(MODEL, cache_dir=cache)


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub_attrs")
    cache = tmp_path_factory.mktemp("cub_cache")
    dataset = make_cub(root, n_classes=4, train_per_class=10, test_per_class=5, image_size=16)
    truth = make_cub_attributes(dataset, seed=2)
    featkit.extract(MODEL, "cub", data_root=root, cache_dir=cache, progress=False, num_workers=0)
    return dataset, truth, FeatureSource(MODEL, cache_dir=cache)


def test_dg_record_follows_from_the_saved_predictions(manifest, tmp_path):
    dataset, truth, source = manifest
    settings = dg.Settings(group_by=("class", "env"), algorithms=("erm", "groupdro", "vrex"),
                           **FAST)
    (record,) = dg.run(source, "manifest", settings, save_predictions=tmp_path / "pred",
                       progress=False)
    assert record["task"] == "dg" and record["dataset"] == "manifest"
    assert list(record["metrics"]) == ["erm.average", "erm.worst_group", "groupdro.average",
                                       "groupdro.worst_group", "vrex.average",
                                       "vrex.worst_group"]
    assert record["settings"]["group_by"] == ["class", "env"]
    assert record["settings"]["domain_by"] == ["env"]
    assert record["settings"]["selection"].startswith("val worst-group accuracy")
    saved = np.load(record["predictions_file"])
    assert record["predictions_file"] == str(tmp_path / "pred")
    assert list(saved["sample_ids"]) == dataset.ids("test")
    names = list(saved["group_names"])  # every group id's name; the record lists the tested
    tested = [n for g, n in enumerate(names) if (saved["groups"] == g).any()]
    assert tested == record["groups"]["evaluated"]
    for algorithm in ("erm", "groupdro", "vrex"):
        predictions = saved[f"pred_{algorithm}"]
        worst = []
        for row in predictions:
            per_group = []
            for g in range(len(names)):
                members = saved["groups"] == g
                if members.any():
                    per_group.append(np.mean(row[members] == saved["labels"][members]))
            worst.append(min(per_group))
        summary = record["algorithms"][algorithm]
        assert summary["worst_group"]["mean"] == pytest.approx(np.mean(worst))
        assert record["metrics"][f"{algorithm}.worst_group"] == pytest.approx(np.mean(worst))
        assert len(summary["per_seed"]) == 2
    # the groups are the truth's (class, env) combinations
    expected = sorted({(dataset.class_names[label], truth[i]["env"])
                       for i, label in dataset.splits["test"]})
    assert tested == [f"class={c}|env={e}" for c, e in expected]


def test_dg_holdout_tests_only_the_held_out_values(manifest):
    _, _, source = manifest
    settings = dg.Settings(group_by=("class", "fgd"), algorithms=("erm",), seeds=1, steps=5,
                           holdout=("fgd", ("blue",)))
    (record,) = dg.run(source, "manifest", settings, progress=False)
    assert all(name.endswith("fgd=blue") for name in record["groups"]["evaluated"])
    train_groups = [n for n, c in zip(record["groups"]["train_groups"],
                                      record["groups"]["train_counts"]) if c]
    assert not any(name.endswith("fgd=blue") for name in train_groups)
    assert record["settings"]["holdout"] == {"attribute": "fgd", "values": ["blue"]}
    with pytest.raises(FeatkitError, match="--holdout fgd=green: no image has that value"):
        dg.run(source, "manifest", dg.Settings(group_by=("class", "fgd"), algorithms=("erm",),
                                               seeds=1, steps=2, holdout=("fgd", ("green",))),
               progress=False)


def test_dg_attr_map_merges_values(manifest, tmp_path):
    _, _, source = manifest
    path = tmp_path / "merge.json"
    path.write_text(json.dumps({"pink": "red"}))
    settings = dg.Settings(group_by=("class", "fgd"), algorithms=("erm",), seeds=1, steps=5,
                           attr_map=str(path), eval_group_by=("fgd",))
    (record,) = dg.run(source, "manifest", settings, progress=False)
    assert record["groups"]["evaluated"] == ["fgd=blue", "fgd=red"]
    path.write_text(json.dumps({"fgd": {"pink": "purple"}}))
    with pytest.raises(FeatkitError, match=r"merge.json \(fgd\): unknown class name.*purple"):
        dg.run(source, "manifest", settings, progress=False)


def test_dg_settings_errors(manifest):
    _, _, source = manifest
    with pytest.raises(FeatkitError, match="--group-by names no key"):
        dg.Settings()
    with pytest.raises(FeatkitError, match="vrex compare domains"):
        dg.Settings(group_by=("class",), algorithms=("erm", "vrex"))
    with pytest.raises(FeatkitError, match="unknown DG algorithm"):
        dg.Settings(group_by=("class", "env"), algorithms=("erm", "jtt"))
    with pytest.raises(FeatkitError, match=r"no attribute 'bgd'.*\(attributes: fgd, env\)"):
        dg.run(source, "manifest", dg.Settings(group_by=("class", "bgd"), algorithms=("erm",)),
               progress=False)


def test_categorical_attribute_probes(manifest):
    _, _, source = manifest
    (record,) = attributes.run(source, "manifest", attributes.Settings(c_grid=(1.0, 10.0)),
                               progress=False)
    assert record["settings"]["mode"] == "categorical"
    assert record["settings"]["attributes"] == ["fgd", "env"]
    assert set(record["metrics"]) == {"fgd.top1", "fgd.mean_per_class", "env.top1",
                                      "env.mean_per_class", "mean_top1"}
    assert record["per_attribute"]["env"]["values"] == ["in_the_sky", "indoor"]
    assert record["metrics"]["mean_top1"] == pytest.approx(
        np.mean([record["metrics"]["fgd.top1"], record["metrics"]["env.top1"]]))


def test_cub_binary_attribute_probes(cub):
    dataset, truth, source = cub
    settings = attributes.Settings(attributes=("has_wing_color", "has_size"),
                                   l2_grid=(1e-2, 1e-4), max_iter=50)
    (record,) = attributes.run(source, "cub", settings, progress=False)
    assert record["settings"]["mode"] == "binary"
    assert set(record["per_group"]) == {"has_wing_color", "has_size"}
    table = record["per_attribute"]
    assert [row["attribute"] for row in table] == [n for n in truth.names
                                                   if n.startswith(("has_wing_color", "has_size"))]
    assert record["metrics"]["macro_auroc"] == pytest.approx(
        np.mean([row["auroc"] for row in table if row["auroc"] is not None]))
    test_ids = featkit.load(MODEL, "cub", "test", cache_dir=source.cache_dir).sample_ids
    rows = [truth.sample_ids.index(i) for i in test_ids]
    first = truth.names.index(table[0]["attribute"])
    assert table[0]["positives"] == int(truth.present[rows, first].sum())
    strict = attributes.run(source, "cub", attributes.Settings(
        attributes=("has_size",), min_certainty=4, l2_grid=(1e-2,), max_iter=30),
        progress=False)[0]
    certain = truth.certainty[rows][:, truth.names.index(strict["per_attribute"][0]["attribute"])]
    assert strict["per_attribute"][0]["labelled"] == int((certain >= 4).sum())


def test_taxonomy_levels_and_the_finest_equals_the_linear_probe(manifest, tmp_path):
    dataset, _, source = manifest
    write_taxonomy(tmp_path / "tax.csv", dataset.class_names, ("species", "genus", "family"))
    probe = linear.Settings(c_grid=(1.0, 10.0, 100.0))
    (record,) = taxonomy.run(source, ["manifest"], taxonomy.Settings(
        hierarchy=str(tmp_path / "tax.csv"), levels=("genus", "species"), probe=probe),
        progress=False)
    assert [row["level"] for row in record["levels"]] == ["species", "genus"]  # fine to coarse
    assert [row["classes"] for row in record["levels"]] == [4, 2]
    assert list(record["metrics"]) == ["species.top1", "species.mean_per_class", "genus.top1",
                                       "genus.mean_per_class"]
    (plain,) = linear.run(source, ["manifest"], probe, progress=False).records
    assert record["metrics"]["species.top1"] == plain["metrics"]["top1"]


def test_taxonomy_refuses_a_level_with_one_class(manifest, tmp_path):
    dataset, _, source = manifest
    write_taxonomy(tmp_path / "tax.csv", dataset.class_names, ("species", "genus", "family"),
                   fan_in=4)
    with pytest.raises(FeatkitError, match="level 'genus' puts every class"):
        taxonomy.run(source, ["manifest"], taxonomy.Settings(hierarchy=str(tmp_path / "tax.csv"),
                                                             levels=("genus",)), progress=False)


def test_pairs_from_a_file_score_like_sklearn(manifest, tmp_path):
    dataset, _, source = manifest
    test_ids, test_labels = dataset.ids("test"), dataset.labels("test")
    listed = [(a, b, la == lb) for i, (a, la) in enumerate(zip(test_ids, test_labels))
              for b, lb in list(zip(test_ids, test_labels))[i + 1:]]
    path = write_pairs(tmp_path / "pairs.csv", listed)
    (record,) = pairs.run(source, "manifest", pairs.Settings(pairs=str(path)))
    fs = featkit.load(MODEL, "manifest", "test", cache_dir=source.cache_dir)
    unit = fs.features / np.linalg.norm(fs.features, axis=1, keepdims=True)
    row = {sid: i for i, sid in enumerate(fs.sample_ids)}
    scores = [unit[row[a]] @ unit[row[b]] for a, b, _ in listed]
    assert record["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score([s for _, _, s in listed], scores), abs=1e-6)
    assert record["settings"]["test_pairs"] == f"file {path}"
    assert record["settings"]["val_pairs"].startswith("mined from val")
    assert record["counts"]["test_same"] == sum(s for _, _, s in listed)


def test_mined_pairs_and_unknown_ids(manifest, tmp_path):
    _, _, source = manifest
    (record,) = pairs.run(source, "manifest", pairs.Settings(per_image=2))
    assert set(record["metrics"]) == {"roc_auc", "accuracy", "tar_at_far"}
    assert record["counts"]["test_different"] > 0
    assert any("cannot resolve FAR" in w for w in record["warnings"])
    path = write_pairs(tmp_path / "bad.csv", [("nope.jpg", "x.jpg", True), ("a", "b", False)])
    with pytest.raises(FeatkitError, match="image ids are not in the cached features"):
        pairs.run(source, "manifest", pairs.Settings(pairs=str(path)))
