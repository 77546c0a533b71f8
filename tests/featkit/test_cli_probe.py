"""``featkit probe linear|knn`` end to end on real caches (digits + a tiny CUB, pixel features)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import featkit
from featkit.cli import main
from featkit.testing.datasets import make_cub
from probes.knn import knn_probe
from probes.linear import LinearProbe, linear_probe

MODEL = "pixels:8"
GRID = "0.1,1,10,100"
RECORD_KEYS = ["task", "model", "dataset", "features", "metrics", "settings", "provenance",
               "featkit_version"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe_cache")
    featkit.extract(MODEL, "digits", splits=["train", "val", "test"], cache_dir=path,
                    progress=False, num_workers=0)
    cub = make_cub(tmp_path_factory.mktemp("cub"), n_classes=4, train_per_class=12,
                   test_per_class=4)
    featkit.extract(MODEL, "cub", data_root=cub.root, splits=["train", "val", "test"],
                    cache_dir=path, progress=False, num_workers=0)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["probe", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load_splits(cache_dir, dataset):
    return [featkit.load(MODEL, dataset, s, "visual", cache_dir=cache_dir)
            for s in ("train", "val", "test")]


def test_linear_record_matches_the_library_and_saves_the_probe(cache_dir, tmp_path, capsys):
    out = tmp_path / "linear.json"
    code, stdout, err = run_cli(
        capsys, "linear", "--model", MODEL, "--dataset", "digits", "--c-grid", GRID,
        "--cache-dir", cache_dir, "--json", out, "--no-progress",
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert list(record)[:8] == RECORD_KEYS
    assert record["task"] == "linear_probe" and record["dataset"] == "digits"
    assert record["features"] == "visual" and record["model"] == MODEL
    assert list(record["metrics"]) == ["top1", "top5", "mean_per_class"]
    settings = record["settings"]
    assert settings["normalization"] == "l2" and settings["refit_on_val"] is True
    assert settings["c_grid"] == [0.1, 1.0, 10.0, 100.0] and settings["C"] in settings["c_grid"]
    assert settings["seed"] == 0 and settings["merge"] is False
    assert [p["C"] for p in record["sweep"]] == settings["c_grid"]
    assert record["provenance"]["split"] == "train" and record["provenance"]["model"] == MODEL

    train, val, test = load_splits(cache_dir, "digits")
    direct = linear_probe(train.features, train.labels, val.features, val.labels,
                          test.features, test.labels, class_names=train.class_names,
                          c_grid=[0.1, 1.0, 10.0, 100.0], progress=False)
    assert record["metrics"] == pytest.approx(direct.metrics(), abs=1e-12)
    assert settings["C"] == direct.C
    assert record["metrics"]["top1"] > 0.85  # pixels separate digits well
    assert record["counts"] == {"train": len(train), "val": len(val), "test": len(test)}
    assert set(record["per_class"]) == set(train.class_names)

    probe_path = tmp_path / "linear.probe.npz"
    assert record["probe_file"] == str(probe_path)
    probe = LinearProbe.load(probe_path)
    assert probe.normalization == "l2" and probe.C == direct.C
    assert np.mean(probe.predict(test.features) == test.labels) == pytest.approx(
        record["metrics"]["top1"]
    )
    assert "chosen C" in stdout and "top1" in stdout and "saved probe" in stdout


def test_merged_linear_reports_single_merged_and_drop(cache_dir, tmp_path, capsys):
    out = tmp_path / "merged.json"
    probe_path = tmp_path / "merged.pt"
    code, stdout, err = run_cli(
        capsys, "linear", "--model", MODEL, "--dataset", "digits,cub", "--merge",
        "--c-grid", GRID, "--cache-dir", cache_dir, "--json", out, "--save-probe", probe_path,
        "--no-progress",
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["dataset"] == "digits,cub" and record["settings"]["merge"] is True
    assert record["label_space"] == {"datasets": ["digits", "cub"], "offsets": [0, 10],
                                     "sizes": [10, 4]}
    assert set(record["provenance"]["datasets"]) == {"digits", "cub"}
    probe = LinearProbe.load(probe_path)
    assert probe.num_classes == 14 and probe.class_names[0] == "digits/0"
    assert probe.class_names[10].startswith("cub/")

    rows = record["per_dataset"]
    for name, offset in (("digits", 0), ("cub", 10)):
        train, val, test = load_splits(cache_dir, name)
        single = linear_probe(train.features, train.labels, val.features, val.labels,
                              test.features, test.labels, class_names=train.class_names,
                              c_grid=[0.1, 1.0, 10.0, 100.0], progress=False)
        assert rows[name]["single"] == pytest.approx(single.top1)
        assert record["single_C"][name] == single.C
        # merged top-1: argmax over all 14 merged classes on this dataset's test set
        merged_top1 = np.mean(probe.predict(test.features) == test.labels + offset)
        assert rows[name]["merged"] == pytest.approx(merged_top1)
        assert rows[name]["drop"] == pytest.approx(rows[name]["single"] - rows[name]["merged"])
    assert record["mean_drop"] == pytest.approx(np.mean([r["drop"] for r in rows.values()]))
    assert "merged top1" in stdout and "mean" in stdout


def test_merge_rejects_features_of_different_models(cache_dir, monkeypatch, capsys):
    real_load = featkit.load

    def load(model, dataset, split, kind=None, **kwargs):
        fs = real_load(model, dataset, split, kind, **kwargs)
        if dataset == "cub":
            fs.meta = {**fs.meta, "model": "pixels:16"}
        return fs

    monkeypatch.setattr(featkit, "load", load)
    code, stdout, stderr = run_cli(
        capsys, "linear", "--model", MODEL, "--dataset", "digits,cub", "--merge",
        "--cache-dir", cache_dir, "--no-progress",
    )
    assert code != 0 and stdout == ""
    assert stderr.count("\n") == 1
    assert "differ in model (digits: pixels:8, cub: pixels:16)" in stderr


def test_label_map_merges_classes_and_rejects_unknown_names(cache_dir, tmp_path, capsys):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"1": "7", "8": "3"}))
    out = tmp_path / "mapped.json"
    code, _, err = run_cli(
        capsys, "linear", "--model", MODEL, "--dataset", "digits", "--label-map", mapping,
        "--c-grid", GRID, "--cache-dir", cache_dir, "--json", out, "--no-progress",
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["label_map"]["class_names"] == ["0", "2", "3", "4", "5", "6", "7", "9"]
    assert set(record["per_class"]) == {"0", "2", "3", "4", "5", "6", "7", "9"}
    assert record["settings"]["label_map"] == str(mapping)

    mapping.write_text(json.dumps({"one": "7"}))
    code, stdout, stderr = run_cli(
        capsys, "linear", "--model", MODEL, "--dataset", "digits", "--label-map", mapping,
        "--cache-dir", cache_dir, "--no-progress",
    )
    assert code != 0 and stdout == "" and stderr.count("\n") == 1
    assert str(mapping) in stderr and "'one'" in stderr and "Valid names: 0, 1, 2" in stderr


def test_knn_record_matches_the_library(cache_dir, tmp_path, capsys):
    out = tmp_path / "knn.json"
    code, stdout, err = run_cli(
        capsys, "knn", "--model", MODEL, "--dataset", "digits", "--k", "5,10",
        "--cache-dir", cache_dir, "--json", out, "--no-progress",
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert list(record)[:8] == RECORD_KEYS and record["task"] == "knn"
    assert record["settings"]["bank"] == "train+val" and record["settings"]["primary_k"] == 10
    train, val, test = load_splits(cache_dir, "digits")
    direct = knn_probe(np.concatenate([train.features, val.features]),
                       np.concatenate([train.labels, val.labels]), test.features, test.labels,
                       ks=[5, 10], progress=False)
    assert record["metrics"] == pytest.approx(direct.metrics(), abs=1e-12)
    assert list(record["metrics"])[:3] == ["top1", "top5", "mean_per_class"]
    assert record["metrics"]["top1"] > 0.85
    assert "top1_k5" in stdout


def test_knn_merged_and_multi_dataset_list(cache_dir, tmp_path, capsys):
    out = tmp_path / "knn_merged.json"
    code, _, err = run_cli(
        capsys, "knn", "--model", MODEL, "--dataset", "digits,cub", "--merge", "--k", "5",
        "--cache-dir", cache_dir, "--json", out, "--no-progress",
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert set(record["per_dataset"]) == {"digits", "cub"}
    for row in record["per_dataset"].values():
        assert row["drop"] == pytest.approx(row["single"] - row["merged"])

    listing = tmp_path / "two.json"
    code, _, err = run_cli(
        capsys, "knn", "--model", MODEL, "--dataset", "digits,cub", "--k", "5",
        "--cache-dir", cache_dir, "--json", listing, "--no-progress",
    )
    assert code == 0, err
    records = json.loads(listing.read_text())
    assert [r["dataset"] for r in records] == ["digits", "cub"]


def test_argument_errors_are_one_line(cache_dir, tmp_path, capsys):
    for argv, expected in [
        (["linear", "--dataset", "digits", "--merge"], "two or more datasets"),
        (["linear", "--dataset", "digits,cub", "--label-map", tmp_path / "m.json"],
         "single --dataset"),
        (["linear", "--dataset", "digits", "--label-map", tmp_path / "none.json"],
         "does not exist"),
        (["knn", "--dataset", "digits", "--k", "ten"], "comma-separated integers"),
    ]:
        code, stdout, stderr = run_cli(
            capsys, argv[0], "--model", MODEL, *argv[1:], "--cache-dir", cache_dir,
            "--no-progress",
        )
        assert code != 0 and stdout == "", argv
        assert stderr.count("\n") == 1 and expected in stderr, (argv, stderr)
