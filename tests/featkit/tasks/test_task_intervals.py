"""Every task stores per-item scores whose mean is its metric, and applies ``ci`` (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

import featkit
from featkit.tasks import FeatureSource, knn, linear, perturb, retrieval
from featkit.tasks.intervals import Interval, read_per_item
from featkit.testing.datasets import make_imagefolder, make_manifest

CI = Interval(0.9, 200, 3)


@pytest.fixture(scope="module")
def source(digits_cache):
    return FeatureSource("pixels:8", cache_dir=digits_cache)


@pytest.fixture(scope="module")
def merged_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("merged")
    sizes = dict(n_classes=3, train_per_class=6, val_per_class=2, test_per_class=4)
    for made in (make_imagefolder(root / "folder", **sizes),
                 make_manifest(root / "manifest", **sizes)):
        featkit.extract("pixels:8", made.name, data_root=made.root, cache_dir=root / "cache",
                        progress=False, num_workers=0)
    return FeatureSource("pixels:8", cache_dir=root / "cache")


def _check(record, metric, *, exact=True):
    items = read_per_item(record, metric)
    value = record["metrics"][metric] if "[" not in metric else None
    if value is not None:
        assert items.values.mean() == (value if exact else pytest.approx(value, rel=1e-6))
    row = record["ci"]["metrics"][metric]
    assert row["low"] <= row["estimate"] <= row["high"]
    assert (record["ci"]["level"], record["ci"]["resamples"], record["ci"]["seed"]) == (0.9, 200, 3)
    return items


def test_linear_and_knn(source):
    grid = (0.1, 1.0, 10.0)
    (record,) = linear.run(source, ["digits"], linear.Settings(c_grid=grid, ci=CI),
                           progress=False).records
    items = _check(record, "top1")
    assert items.n == record["counts"]["test"] and items.unit == "test items"
    (plain,) = linear.run(source, ["digits"], linear.Settings(c_grid=grid),
                          progress=False).records
    assert "ci" not in plain and plain["per_item"] == record["per_item"]
    (record,) = knn.run(source, ["digits"], knn.Settings(ks=(5,), ci=CI), progress=False)
    _check(record, "top1")


def test_merged_runs_resample_within_each_dataset(merged_source):
    (record,) = knn.run(merged_source, ["imagefolder", "manifest"],
                        knn.Settings(ks=(3,), merge=True, ci=CI), progress=False)
    items = _check(record, "top1")
    assert items.strata == (("imagefolder", 12), ("manifest", 12))
    per = record["ci"]["metrics"]["top1"]["per_stratum"]
    for name in ("imagefolder", "manifest"):
        assert per[name]["n"] == 12
        assert per[name]["estimate"] == pytest.approx(record["per_dataset"][name]["merged"])


def test_retrieval_intervals_are_over_queries(source):
    record = retrieval.run(source, "digits", retrieval.Settings(ci=CI), progress=False)
    items = _check(record, "mAP", exact=False)
    assert items.unit == "queries" and items.n == record["counts"]["queries"]


def test_perturb_intervals_per_budget(source):
    settings = perturb.Settings(eps=(0.0, 0.05), eps_rel=True, steps=2, c_grid=(1.0, 10.0), ci=CI)
    record = perturb.run(source, "digits", settings, progress=False).record
    _check(record, "clean_top1")
    for i, point in enumerate(record["metrics"]["sweep"]):
        items = _check(record, f"sweep[{i}].top1")
        assert items.values.mean() == point["top1"]
    assert np.array_equal(read_per_item(record, "sweep[0].top1").values,
                          read_per_item(record, "clean_top1").values)
