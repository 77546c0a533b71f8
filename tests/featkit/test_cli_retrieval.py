"""``featkit retrieval`` end to end on a real cache of the bundled digits."""

from __future__ import annotations

import json

import pytest

import featkit
from featkit.cli import main
from probes.retrieval import METRIC_KEYS, retrieval_map

MODEL = "pixels:8"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("retrieval_cache")
    featkit.extract(MODEL, "digits", splits=["train", "test"], cache_dir=path, progress=False, num_workers=0)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["retrieval", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_leave_one_out_writes_the_record(cache_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(
        capsys, "--model", MODEL, "--dataset", "digits", "--cache-dir", cache_dir, "--json", out, "--no-progress"
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert list(record)[:8] == ["task", "model", "dataset", "features", "metrics", "settings", "provenance", "featkit_version"]
    assert record["task"] == "retrieval" and record["model"] == MODEL and record["dataset"] == "digits"
    assert record["features"] == "visual"
    assert list(record["metrics"]) == list(METRIC_KEYS)
    assert all(0.0 <= v <= 1.0 for v in record["metrics"].values())
    settings = record["settings"]
    assert settings["mode"] == "leave-one-out" and settings["query_split"] == settings["gallery_split"] == "test"
    assert settings["metric"] == "cosine" and settings["tie_rule"] == "pessimistic" and settings["max_memory"] == "2GB"
    assert record["provenance"]["split"] == "test" and record["provenance"]["model"] == MODEL
    assert "gallery" not in record["provenance"]
    assert set(record["per_class_ap"]) == {str(i) for i in range(10)}

    fs = featkit.load(MODEL, "digits", "test", "visual", cache_dir=cache_dir)
    direct = retrieval_map(fs.features, fs.labels, progress=False)
    assert record["metrics"] == pytest.approx(direct.metrics(), abs=1e-12)
    assert record["counts"] == {"queries": len(fs), "excluded_queries": 0, "gallery": len(fs)}
    assert 0.5 < record["metrics"]["mAP"] < 1.0  # pixels separate digits well, not perfectly
    for key in ("mAP", "mAP@R", "R-precision", "P@1", "R@10"):
        assert key in stdout
    assert "leave-one-out" in stdout


def test_train_gallery(cache_dir, tmp_path, capsys):
    out = tmp_path / "g.json"
    code, _, err = run_cli(
        capsys, "--model", MODEL, "--dataset", "digits", "--gallery-split", "train", "--metric", "euclidean",
        "--max-memory", "8MB", "--cache-dir", cache_dir, "--json", out, "--no-progress",
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["settings"]["mode"] == "gallery" and record["settings"]["gallery_split"] == "train"
    assert record["settings"]["metric"] == "euclidean" and record["settings"]["max_memory"] == "8MB"
    assert record["provenance"]["gallery"]["split"] == "train"
    query = featkit.load(MODEL, "digits", "test", cache_dir=cache_dir)
    gallery = featkit.load(MODEL, "digits", "train", cache_dir=cache_dir)
    direct = retrieval_map(query.features, query.labels, gallery.features, gallery.labels, metric="euclidean", progress=False)
    assert record["metrics"] == pytest.approx(direct.metrics(), abs=1e-12)
    assert record["counts"]["gallery"] == len(gallery)


def test_same_gallery_split_is_leave_one_out(cache_dir, tmp_path, capsys):
    out = tmp_path / "s.json"
    code, _, err = run_cli(
        capsys, "--model", MODEL, "--dataset", "digits", "--gallery-split", "test", "--cache-dir", cache_dir,
        "--json", out, "--no-progress",
    )
    assert code == 0 and json.loads(out.read_text())["settings"]["mode"] == "leave-one-out"


def test_missing_cache_is_a_one_line_error(tmp_path, capsys):
    code, stdout, stderr = run_cli(capsys, "--model", MODEL, "--dataset", "digits", "--cache-dir", tmp_path / "empty")
    assert code != 0 and stdout == ""
    assert stderr.count("\n") == 1 and "featkit extract" in stderr


def test_bad_memory_is_a_one_line_error(cache_dir, capsys):
    code, _, stderr = run_cli(
        capsys, "--model", MODEL, "--dataset", "digits", "--cache-dir", cache_dir, "--max-memory", "lots", "--no-progress"
    )
    assert code != 0 and stderr.count("\n") == 1 and "max memory" in stderr
