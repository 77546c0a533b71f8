"""``featkit probe dg|attributes|taxonomy`` and ``featkit pairs`` end to end: the records the
commands write are the tasks' records, tables print, argument errors are one line."""

from __future__ import annotations

import json

import pytest

import featkit
from featkit.cli import main
from featkit.tasks import dg, pairs
from featkit.tasks.loading import FeatureSource
from featkit.testing.attributes import (
    make_attribute_manifest,
    make_cub_attributes,
    write_pairs,
    write_taxonomy,
)
from featkit.testing.datasets import make_cub

MODEL = "pixels:8"


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cli_cache")
    manifest, _ = make_attribute_manifest(tmp_path_factory.mktemp("megacoin"),
                                          {"bgd": ("white", "green"), "env": ("in", "out")},
                                          n_classes=4, train_per_class=6, val_per_class=3,
                                          test_per_class=3, image_size=16)
    featkit.extract(MODEL, "manifest", data_root=manifest.root, cache_dir=cache, progress=False,
                    num_workers=0)
    cub = make_cub(tmp_path_factory.mktemp("cub"), n_classes=3, train_per_class=6,
                   test_per_class=3, image_size=16)
    make_cub_attributes(cub)
    featkit.extract(MODEL, "cub", data_root=cub.root, cache_dir=cache, progress=False,
                    num_workers=0)
    return cache, manifest


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([*map(str, argv)])
    except SystemExit as exit:  # argparse errors
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_probe_dg_writes_the_tasks_record(caches, tmp_path, capsys):
    cache, _ = caches
    out = tmp_path / "dg.json"
    code, stdout, err = run_cli(
        capsys, "probe", "dg", "--model", MODEL, "--dataset", "manifest", "--group-by",
        "class,bgd", "--algorithms", "erm,groupdro,coral", "--seeds", 2, "--steps", 10,
        "--grid", "groupdro=0.01,0.1", "--cache-dir", cache, "--json", out,
        "--save-predictions", tmp_path / "pred.npz", "--no-progress")
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["task"] == "dg" and record["settings"]["grids"]["groupdro"] == [0.01, 0.1]
    assert "worst group (%)" in stdout and "groupdro" in stdout and "0.01 x" in stdout
    assert "constant without gradient" in stdout  # CORAL on frozen features says so
    settings = dg.Settings(group_by=("class", "bgd"), algorithms=("erm", "groupdro", "coral"),
                           seeds=2, steps=10, grids=(("groupdro", (0.01, 0.1)),))
    (direct,) = dg.run(FeatureSource(MODEL, cache_dir=cache), "manifest", settings,
                       progress=False)
    assert direct["metrics"] == record["metrics"]
    assert direct["algorithms"] == record["algorithms"]


def test_probe_dg_argument_errors_are_one_line(caches, capsys):
    cache, _ = caches
    code, _, err = run_cli(capsys, "probe", "dg", "--model", MODEL, "--dataset", "manifest",
                           "--group-by", "class,bgd", "--grid", "groupdro", "--cache-dir", cache)
    assert code == 2 and "is not ALGORITHM=value" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "probe", "dg", "--model", MODEL, "--dataset", "manifest",
                           "--group-by", "class", "--algorithms", "irm", "--cache-dir", cache)
    assert code == 2 and "irm compare domains" in err


def test_probe_attributes_on_cub_and_a_manifest(caches, tmp_path, capsys):
    cache, _ = caches
    code, stdout, err = run_cli(
        capsys, "probe", "attributes", "--model", MODEL, "--dataset", "cub", "--attributes",
        "has_size,has_bill_shape", "--l2-grid", "0.01,0.0001", "--max-iter", 30,
        "--cache-dir", cache, "--json", tmp_path / "a.json", "--no-progress")
    assert code == 0, err
    record = json.loads((tmp_path / "a.json").read_text())
    assert set(record["per_group"]) == {"has_size", "has_bill_shape"}
    assert "macro AUROC" in stdout
    code, stdout, err = run_cli(capsys, "probe", "attributes", "--model", MODEL, "--dataset",
                                "manifest", "--c-grid", "1,10", "--cache-dir", cache,
                                "--no-progress")
    assert code == 0, err
    assert "bgd" in stdout and "env" in stdout


def test_probe_taxonomy_with_a_plot(caches, tmp_path, capsys):
    cache, manifest = caches
    write_taxonomy(tmp_path / "tax.csv", manifest.class_names, ("species", "genus"))
    code, stdout, err = run_cli(
        capsys, "probe", "taxonomy", "--model", MODEL, "--dataset", "manifest", "--hierarchy",
        tmp_path / "tax.csv", "--c-grid", "1,10", "--cache-dir", cache, "--json",
        tmp_path / "t.json", "--plot", tmp_path / "levels.png", "--no-progress")
    assert code == 0, err
    record = json.loads((tmp_path / "t.json").read_text())
    assert [row["level"] for row in record["levels"]] == ["species", "genus"]
    assert (tmp_path / "levels.png").stat().st_size > 0
    assert "genus" in stdout


def test_pairs_command(caches, tmp_path, capsys):
    cache, manifest = caches
    ids, labels = manifest.ids("test"), manifest.labels("test")
    path = write_pairs(tmp_path / "pairs.csv", [(ids[i], ids[j], labels[i] == labels[j])
                                                for i in range(len(ids))
                                                for j in range(i + 1, len(ids))])
    code, stdout, err = run_cli(capsys, "pairs", "--model", MODEL, "--dataset", "manifest",
                                "--pairs", path, "--cache-dir", cache, "--json",
                                tmp_path / "p.json")
    assert code == 0, err
    record = json.loads((tmp_path / "p.json").read_text())
    (direct,) = pairs.run(FeatureSource(MODEL, cache_dir=cache), "manifest",
                          pairs.Settings(pairs=str(path)))
    assert record["metrics"] == direct["metrics"]
    assert "roc_auc" in stdout and "same-object pairs" in stdout
    code, _, err = run_cli(capsys, "pairs", "--model", MODEL, "--dataset", "manifest",
                           "--far", "2", "--cache-dir", cache)
    assert code == 2 and "between 0 and 1" in err
