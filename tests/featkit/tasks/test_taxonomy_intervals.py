"""Per-item scores and ``--ci`` intervals of the taxonomy task (issue 18): each level's top-1
is the mean of its test images' correctness, the finest level's scores are the linear probe's,
the intervals are the defining resampling loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.tasks import linear, taxonomy
from featkit.tasks.intervals import Interval, ids_digest, read_per_item
from featkit.tasks.loading import FeatureSource
from featkit.testing.attributes import write_taxonomy
from tests.featkit.tasks.test_zeroshot_mc_intervals import check_interval

MODEL = "pixels:8"
CI = Interval(0.9, 200, 3)
PROBE = linear.Settings(c_grid=(1.0, 10.0))


@pytest.fixture(scope="module")
def tree(digits_cache, tmp_path_factory):
    """Digits' classes in pairs (genus_0 = 0, 1; ...): neither level is classified perfectly."""
    source = FeatureSource(MODEL, cache_dir=digits_cache)
    path = tmp_path_factory.mktemp("taxonomy") / "tax.csv"
    write_taxonomy(path, source.load("digits", "test").class_names, ("species", "genus"))
    return source, str(path)


def test_each_level_stores_its_test_images_correctness(tree):
    source, hierarchy = tree
    (record,) = taxonomy.run(source, ["digits"], taxonomy.Settings(
        hierarchy=hierarchy, probe=PROBE, ci=CI), progress=False)
    assert set(record["per_item"]) == {"species.top1", "genus.top1"}
    assert set(record["ci"]["metrics"]) == {"species.top1", "genus.top1"}
    ids = source.load("digits", "test").sample_ids
    for level in ("species", "genus"):
        items = check_interval(record, f"{level}.top1")
        assert items.values.mean() == record["metrics"][f"{level}.top1"]
        assert items.n == 450 and items.ids_sha256 == ids_digest(ids)
    (plain,) = linear.run(source, ["digits"], PROBE, progress=False).records
    np.testing.assert_array_equal(read_per_item(record, "species.top1").values,
                                  read_per_item(plain, "top1").values)
    (without,) = taxonomy.run(source, ["digits"], taxonomy.Settings(
        hierarchy=hierarchy, probe=PROBE), progress=False)
    assert "ci" not in without and without["per_item"] == record["per_item"]


def test_the_interval_belongs_to_the_taxonomy_not_its_probe(tree):
    _, hierarchy = tree
    with pytest.raises(FeatkitError, match="taxonomy's ci, not its probe's"):
        taxonomy.Settings(hierarchy=hierarchy, probe=linear.Settings(ci=CI))


def test_cli_writes_and_prints_the_intervals(tree, tmp_path, capsys):
    source, hierarchy = tree
    out = tmp_path / "t.json"
    assert main(["probe", "taxonomy", "--model", MODEL, "--dataset", "digits", "--hierarchy",
                 hierarchy, "--c-grid", "1,10", "--cache-dir", str(source.cache_dir), "--json",
                 str(out), "--ci", "0.9", "--ci-resamples", "200", "--ci-seed", "3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert (record["ci"]["level"], record["ci"]["resamples"], record["ci"]["seed"]) == (0.9, 200, 3)
    assert "90% percentile bootstrap intervals (200 resamples, seed 3)" in printed
    assert "  genus.top1: " in printed and "over 450 test items" in printed
    check_interval(record, "genus.top1")
