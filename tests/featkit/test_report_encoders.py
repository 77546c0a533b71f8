"""featkit report: zero-shot and multiple choice next to the linear probe per model (seed 002
Fig. 3), only when such records are there."""

from __future__ import annotations

import math

import pytest

from featkit.reporting import report
from featkit.results import make_result


def _record(task, model, dataset, top1, features="aligned"):
    return make_result(task, model=model, dataset=dataset, features=features,
                       metrics={"top1": top1, "mean_per_class": top1}, settings={},
                       provenance={})


def test_zero_shot_and_mc_stand_next_to_the_best_linear_probe(tmp_path):
    records = [
        _record("zeroshot", "clip", "flowers", 0.752),
        _record("mc", "clip", "flowers", 0.783),
        _record("mc", "llava", "flowers", 0.61, features="likelihood:option"),
        _record("linear_probe", "clip", "flowers", 0.95, features="visual"),
        _record("linear_probe", "clip", "flowers", 0.97, features="aligned"),
        _record("linear_probe", "dino", "flowers", 0.99, features="visual"),  # no zero-shot: no row
    ]
    rep = report(records, tmp_path / "out")
    table = rep.encoders.set_index("model")
    assert list(table.index) == ["clip", "llava"]
    assert table.loc["clip", "zero-shot"] == pytest.approx(0.752)
    assert table.loc["clip", "multiple choice"] == pytest.approx(0.783)
    assert table.loc["clip", "linear probe"] == pytest.approx(0.97)
    assert table.loc["clip", "linear probe features"] == "aligned"
    assert math.isnan(table.loc["llava", "zero-shot"])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Zero-shot and multiple choice next to the linear probe (seed 002 Fig. 3)" in text
    assert "| clip | flowers | 75.20 | 78.30 | 97.00 | aligned |" in text
    assert (tmp_path / "out" / "zeroshot_mc_vs_linear.csv").is_file()
    assert (tmp_path / "out" / "zeroshot_mc_vs_linear.png").is_file()


def test_reports_without_zero_shot_records_are_unchanged(tmp_path):
    rep = report([_record("linear_probe", "clip", "flowers", 0.9)], tmp_path / "out")
    assert len(rep.encoders) == 0
    assert "seed 002 Fig. 3" not in rep.markdown()
    assert not (tmp_path / "out" / "zeroshot_mc_vs_linear.csv").exists()
