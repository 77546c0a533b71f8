"""The layer-probe task: one probe per layer kind (each the single-kind task's record), one curve
per model, the report's accuracy-vs-depth figure and table, and the CLI's ``--layers``."""

from __future__ import annotations

import json

import pytest

import featkit
from featkit.errors import FeatkitError, UnknownNameError
from featkit.tasks import knn, layers, linear
from featkit.tasks.loading import FeatureSource

MODELS = ("test:tiny-clip", "test:tiny-dinov2")
FAST = linear.Settings(c_grid=(0.1, 10.0), max_iter=100)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from extractors import layer_features

    root = tmp_path_factory.mktemp("layer_cache")
    for model in MODELS:
        featkit.extract(model, "digits", cache_dir=root, progress=False, num_workers=0,
                        features=layer_features(model, "all"))
    return root


def test_each_point_is_the_single_kind_probe(cache):
    source = FeatureSource("test:tiny-clip", features="cls", cache_dir=cache)
    outcome = layers.run(source, ["digits"], layers.Settings(linear=FAST), progress=False)
    (record,) = outcome.records
    assert record["task"] == "layer_probe" and record["features"] == "cls"
    curve = record["metrics"]["curve"]
    assert [p["layer"] for p in curve] == [1, 2] and [p["kind"] for p in curve] == ["cls@1", "cls@2"]
    assert [p["relative_depth"] for p in curve] == [0.5, 1.0]
    for point, layer_record in zip(curve, outcome.layer_records):
        single = linear.run(FeatureSource("test:tiny-clip", features=point["kind"], cache_dir=cache),
                            ["digits"], FAST, progress=False).records[0]
        assert layer_record["metrics"] == single["metrics"] and point["top1"] == single["metrics"]["top1"]
        assert point["C"] == single["settings"]["C"]
    best = max(curve, key=lambda p: p["top1"])
    assert record["best_layer"] == best["layer"] and record["metrics"]["best_top1"] == best["top1"]
    assert record["metrics"]["last_top1"] == curve[-1]["top1"]
    assert record["settings"]["probe_settings"]["c_grid"] == [0.1, 10.0]


def test_knn_and_layers_stored_under_the_other_name(cache):
    source = FeatureSource("test:tiny-clip", features="patch_mean", cache_dir=cache)
    settings = layers.Settings(probe="knn", layers="-1", knn=knn.Settings(ks=(5,)))
    (record,) = layers.run(source, ["digits"], settings, progress=False).records
    (point,) = record["metrics"]["curve"]
    # cached as @2 by --layers all, read as the block asked for (the file knows the depth)
    assert point["layer"] == 2 and point["kind"] == "patch_mean@-1"
    single = knn.run(FeatureSource("test:tiny-clip", features="patch_mean@2", cache_dir=cache),
                     ["digits"], knn.Settings(ks=(5,)), progress=False)[0]
    assert point["top1"] == single["metrics"]["top1"]


def test_bad_requests_are_one_line_errors(cache):
    with pytest.raises(FeatkitError, match="per-layer kind"):
        layers.run(FeatureSource("test:tiny-clip", features="aligned", cache_dir=cache), ["digits"])
    with pytest.raises(FeatkitError, match="per-layer kind"):
        layers.run(FeatureSource("test:tiny-clip", features="cls@2", cache_dir=cache), ["digits"])
    with pytest.raises(UnknownNameError, match="2 blocks"):
        layers.run(FeatureSource("test:tiny-clip", features="cls", cache_dir=cache), ["digits"],
                   layers.Settings(layers=(3,)))
    with pytest.raises(FeatkitError, match="--probe"):
        layers.Settings(probe="svm")
    with pytest.raises(FeatkitError, match="--merge"):
        layers.Settings(linear=linear.Settings(merge=True))


def test_cli_and_report_plot_accuracy_against_depth(cache, tmp_path):
    from featkit.cli import main

    for model in MODELS:
        out = tmp_path / "results" / f"{model.partition(':')[2]}.json"
        assert main(["probe", "linear", "--model", model, "--dataset", "digits", "--features",
                     "cls", "--layers", "all", "--c-grid", "0.1,10", "--max-iter", "100",
                     "--cache-dir", str(cache), "--no-progress", "--json", str(out)]) == 0
        assert json.loads(out.read_text())["task"] == "layer_probe"
    rep = featkit.report(tmp_path / "results", out=tmp_path / "report")
    assert set(rep.depth["system"]) == set(MODELS) and len(rep.depth) == 4
    assert "accuracy_vs_depth" in rep.figures and (tmp_path / "report" / "accuracy_vs_depth.png").exists()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Probe accuracy by layer" in markdown and "digits: cls (linear)" in markdown
    assert (tmp_path / "report" / "depth.csv").exists()


def test_ci_with_layers_is_refused_not_ignored():
    from featkit.errors import FeatkitError
    from featkit.tasks import layers, linear
    from featkit.tasks.intervals import Interval

    with pytest.raises(FeatkitError, match="--ci is not available"):
        layers.Settings(probe="linear", layers="all", linear=linear.Settings(ci=Interval()))
