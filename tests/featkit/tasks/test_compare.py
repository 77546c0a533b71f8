"""Paired comparisons of two records from their per-item scores."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from featkit.tasks.compare import compare, compare_records, comparison_table, pair_records
from featkit.tasks.intervals import Interval, ItemScores, per_item_record
from probes.bootstrap import mcnemar, paired_bootstrap

IDS = [f"img_{i:04d}" for i in range(300)]


def _record(model: str, correct: np.ndarray, dataset: str = "cub", ids=IDS, task="linear_probe"):
    return {"task": task, "model": model, "dataset": dataset, "features": "visual",
            "metrics": {"top1": float(np.mean(correct))},
            "per_item": per_item_record({"top1": ItemScores.of(correct, ids)})}


def test_identical_records_differ_by_zero():
    correct = np.random.default_rng(0).random(300) < 0.7
    result = compare_records(_record("a", correct), _record("b", correct.copy()))
    assert result.paired.difference == 0.0 and result.paired.pvalue == 1.0
    assert (result.paired.low, result.paired.high) == (0.0, 0.0)
    assert result.mcnemar.pvalue == 1.0
    assert "+0.00" in comparison_table([result])


def test_a_difference_matches_the_probes_and_is_written():
    rng = np.random.default_rng(1)
    a = rng.random(300) < 0.8
    b = np.where(rng.random(300) < 0.2, ~a, a)
    result = compare_records(_record("a", a), _record("b", b), interval=Interval(0.9, 300, 2))
    want = paired_bootstrap(a, b, level=0.9, resamples=300, seed=2)
    assert (result.paired.low, result.paired.high, result.paired.pvalue) == (
        want.low, want.high, want.pvalue)
    assert result.mcnemar.pvalue == mcnemar(a, b).pvalue
    row = result.row()
    assert row["kind"] == "paired comparison" and row["ci"]["seed"] == 2
    assert row["mcnemar"]["only_a_correct"] == int(np.sum(a & ~b))


def test_float_scores_get_no_mcnemar():
    ap = np.random.default_rng(2).random(300)
    record = {"task": "retrieval", "model": "m", "dataset": "cub", "features": "visual",
              "metrics": {"mAP": float(ap.mean())},
              "per_item": per_item_record({"mAP": ItemScores.of(ap, IDS, unit="queries")})}
    result = compare_records(record, {**record, "model": "n"})
    assert result.metric == "mAP" and result.mcnemar is None and result.unit == "queries"


def test_other_items_and_other_tasks_are_refused():
    correct = np.ones(300, bool)
    with pytest.raises(FeatkitError, match="different items"):
        compare_records(_record("a", correct), _record("b", correct, ids=IDS[::-1]))
    with pytest.raises(FeatkitError, match="same task"):
        compare_records(_record("a", correct), _record("b", correct, task="knn"))
    with pytest.raises(FeatkitError, match="no per-item scores"):
        compare_records({"task": "knn", "model": "a", "dataset": "d", "metrics": {}},
                        _record("b", correct, task="knn"))


def test_files_of_several_records_pair_by_dataset():
    rng = np.random.default_rng(3)
    a = [_record("a", rng.random(300) < 0.5, d) for d in ("cub", "cars")]
    b = [_record("b", rng.random(300) < 0.5, d) for d in ("cars", "dogs")]
    pairs = pair_records(a, b)
    assert [(x["dataset"], y["dataset"]) for x, y in pairs] == [("cars", "cars")]
    assert [c.dataset for c in compare(a, b)] == ["cars"]
    with pytest.raises(FeatkitError, match="share no"):
        pair_records(a[:1] * 2, b[1:] * 2)
