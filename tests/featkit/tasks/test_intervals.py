"""Per-item scores in records (compact, exact round trip) and the ``ci`` entry of ``--ci``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featkit.errors import FeatkitError
from featkit.tasks.intervals import (
    Interval,
    ItemScores,
    ids_digest,
    interval_lines,
    interval_record,
    per_item_record,
    read_per_item,
)
from probes.bootstrap import bootstrap_mean


def test_bits_and_floats_round_trip_and_stay_small_at_50000_items():
    rng = np.random.default_rng(0)
    ids = [f"val/{i:08d}.JPEG" for i in range(50_000)]
    correct = ItemScores.of(rng.random(50_000) < 0.8, ids)
    ap = ItemScores.of(rng.random(5_794), ids[:5_794], unit="queries")
    entries = json.loads(json.dumps(per_item_record({"top1": correct, "mAP": ap})))
    assert len(json.dumps(entries["top1"])) < 9_000  # 50,000 bits
    back = ItemScores.decode(entries["top1"])
    np.testing.assert_array_equal(back.values, correct.values)
    assert back.ids_sha256 == ids_digest(ids) and back.unit == "test items"
    floats = ItemScores.decode(entries["mAP"])
    np.testing.assert_allclose(floats.values, ap.values, rtol=1e-7)
    assert floats.unit == "queries" and not floats.binary


def test_read_per_item_names_what_is_missing():
    record = {"task": "knn", "model": "m", "dataset": "d", "metrics": {}}
    with pytest.raises(FeatkitError, match="no per-item scores"):
        read_per_item(record, "top1")
    record["per_item"] = per_item_record({"top1": ItemScores.of(np.ones(3, bool), "abc")})
    with pytest.raises(FeatkitError, match="no per-item scores of 'mAP'"):
        read_per_item(record, "mAP")
    record["per_item"]["top1"]["data"] = "***"
    with pytest.raises(FeatkitError, match="not a per-item score entry"):
        read_per_item(record, "top1")


def test_interval_record_uses_the_bootstrap_and_strata():
    rng = np.random.default_rng(1)
    values = np.r_[rng.random(60) < 0.9, rng.random(40) < 0.4]
    item = ItemScores.of(values, range(100), strata=[("a", 60), ("b", 40)])
    ci = interval_record({"top1": item}, Interval(0.9, 200, 3), {"top1": values.mean()})
    assert (ci["level"], ci["resamples"], ci["seed"]) == (0.9, 200, 3)
    row = ci["metrics"]["top1"]
    want = bootstrap_mean(values, level=0.9, resamples=200, seed=3, strata=[60, 40])
    assert (row["low"], row["high"]) == (want.low, want.high)
    part = bootstrap_mean(values[60:], level=0.9, resamples=200, seed=3)
    assert row["per_stratum"]["b"]["low"] == part.low
    text = interval_lines({"ci": ci})
    assert "90% percentile bootstrap" in text and "    b:" in text


def test_interval_settings_are_checked():
    with pytest.raises(FeatkitError, match="--ci"):
        Interval(level=95)
    with pytest.raises(FeatkitError, match="--ci"):
        Interval(resamples=0)
    with pytest.raises(FeatkitError, match="--ci-seed"):
        Interval(seed=-1)
