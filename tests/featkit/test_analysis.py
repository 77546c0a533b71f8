"""featkit.analysis: compare_kinds runs the probes consistently on each feature kind; PCA and
the eps-at-half-accuracy summary against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featkit import analysis


def test_eps_at_fraction_interpolates():
    # clean 0.8 -> 0.6 at 0.1 -> 0.2 at 0.3: half (0.4) is reached halfway from 0.1 to 0.3
    assert analysis.eps_at_fraction([0.1, 0.3], [0.6, 0.2], 0.8) == pytest.approx(0.2)
    assert analysis.eps_at_fraction([0.0, 0.1], [0.8, 0.4], 0.8) == pytest.approx(0.1)
    assert math.isnan(analysis.eps_at_fraction([0.1, 0.2], [0.7, 0.5], 0.8))
    # already below half at the first budget: interpolated from (0, clean)
    assert analysis.eps_at_fraction([0.2], [0.0], 0.8) == pytest.approx(0.1)


def test_pca_2d_matches_an_svd():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 6)) * np.array([5, 3, 1, 1, 1, 1])
    labels = np.repeat(np.arange(6), 10)
    names = [f"c{i}" for i in range(6)]
    frame = analysis.pca_2d(features, labels, names, ["c3", "c1"], normalize=False)
    rows = np.isin(labels, [3, 1])
    x = features[rows] - features[rows].mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    expected = x @ vt[:2].T
    got = frame[["x", "y"]].to_numpy()
    # same points (up to the sign of each component), grouped in the requested class order
    order = np.concatenate([np.flatnonzero(labels[rows] == 3), np.flatnonzero(labels[rows] == 1)])
    for j in range(2):
        assert np.allclose(np.abs(got[:, j]), np.abs(expected[order, j]), atol=1e-9)
    assert frame["class"].tolist() == ["c3"] * 10 + ["c1"] * 10
    assert frame["explained"].iloc[0] == pytest.approx((s[:2] ** 2).sum() / (s ** 2).sum())
    assert analysis.pca_2d(features, labels, names, 2)["class"].unique().tolist() == ["c0", "c1"]


def test_compare_kinds_on_the_tiny_cache(digits_cache):
    import featkit
    from probes.retrieval import retrieval_map

    comparison = analysis.compare_kinds(
        "test:tiny-clip", "digits", cache_dir=digits_cache, c_grid=[0.1, 10.0],
        eps_rel=[0.0, 0.01, 0.1], steps=5, pca_classes=3,
    )
    table = comparison.table()
    assert list(table.index) == [("digits", "visual"), ("digits", "aligned")]
    for kind in ("visual", "aligned"):
        test = featkit.load("test:tiny-clip", "digits", "test", kind, cache_dir=digits_cache)
        direct = retrieval_map(test.features, test.labels, progress=False)
        assert comparison.value("digits", kind, "retrieval_mAP") == direct.map
        curve = comparison.curves.query("kind == @kind").sort_values("eps_rel")
        # the PGD sweep attacks the same probe: no budget = the probe's test top-1
        assert curve["top1"].iloc[0] == comparison.value("digits", kind, "linear_top1")
        assert (np.diff(curve["top1"]) <= 0).all()
        per = comparison.per_class.query("kind == @kind")
        counts = np.bincount(test.labels)
        weighted = float((per["accuracy"].to_numpy() * counts).sum() / counts.sum())
        assert weighted == pytest.approx(comparison.value("digits", kind, "linear_top1"))
        assert len(comparison.pca.query("kind == @kind")) == int(np.isin(test.labels,
                                                                         [0, 1, 2]).sum())
    tasks = [(r["task"], r["features"]) for r in comparison.records]
    assert tasks == [("linear_probe", "visual"), ("retrieval", "visual"), ("perturb", "visual"),
                     ("linear_probe", "aligned"), ("retrieval", "aligned"),
                     ("perturb", "aligned")]
    text = comparison.reading()
    assert "random weights" in text and "`aligned` vs `visual`" in text
    percent = comparison.percent_table()
    assert percent.loc[("digits", "visual"), "linear_top1"] == pytest.approx(
        round(100 * table.loc[("digits", "visual"), "linear_top1"], 2))


def test_compare_kinds_records_are_the_cli_records(digits_cache, tmp_path):
    """The notebook's records are the commands' records for the same settings, byte for byte
    (the CLI also saves its probe, so ``probe_file`` is the one key only it has)."""
    import json

    from featkit.cli import main

    comparison = analysis.compare_kinds(
        "test:tiny-clip", "digits", ["aligned"], cache_dir=digits_cache, c_grid=[0.1, 10.0],
        eps_rel=[0.0, 0.05], steps=3, pca_classes=2,
    )
    common = ["--model", "test:tiny-clip", "--dataset", "digits", "--features", "aligned",
              "--cache-dir", str(digits_cache), "--no-progress"]
    commands = {
        "linear_probe": ["probe", "linear", "--c-grid", "0.1,10"],
        "retrieval": ["retrieval"],
        "perturb": ["perturb", "--norm", "l2", "--eps", "0,0.05", "--eps-rel", "--steps", "3",
                    "--c-grid", "0.1,10"],
    }
    for record in comparison.records:
        out = tmp_path / f"{record['task']}.json"
        assert main([*commands[record["task"]], *common, "--json", str(out)]) == 0
        cli = json.loads(out.read_text())
        cli.pop("probe_file", None)
        assert "probe_file" not in record
        assert json.dumps(record, sort_keys=False) == json.dumps(cli, sort_keys=False), \
            record["task"]
