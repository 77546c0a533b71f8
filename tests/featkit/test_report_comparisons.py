"""``featkit report``: FG-BMK records next to the corrected protocol's, and a suite's published
values as expected / measured / difference (issue 20, items 4-5)."""

from __future__ import annotations

import json
import math

from featkit.cli import main
from featkit.reporting import report
from featkit.results import make_result


def _record(task, metrics, features="visual", dataset="cub", **extra):
    return make_result(task, model="m", dataset=dataset, features=features, metrics=metrics,
                       settings=extra.pop("settings", {}), provenance={}, extra=extra)


FGBMK = _record("fgbmk_linear", {"top1": 0.90, "top5": 0.98},
                settings={"protocol": "fgbmk"},
                compare_with={"task": "linear_probe", "metrics": {"top1": "top1"}})
CORRECTED = _record("linear_probe", {"top1": 0.85, "top5": 0.97})
OTHER_KIND = _record("linear_probe", {"top1": 0.80, "top5": 0.96}, features="aligned")
EXPECTED = [{"task": "fgbmk_linear", "model": "m", "dataset": "cub", "metric": "top1",
             "value": 0.8895, "source": "FG-BMK Table 5"},
            {"task": "fgbmk_linear", "model": "m", "dataset": "cars", "metric": "top1",
             "value": 0.943, "source": "FG-BMK Table 3"}]


def test_fgbmk_stands_next_to_the_corrected_record_of_the_same_kind():
    rep = report([FGBMK, CORRECTED, OTHER_KIND], figures=False)
    rows = rep.protocols.to_dict("records")
    assert len(rows) == 1
    row = rows[0]
    assert (row["corrected_features"], row["fgbmk"], row["corrected"]) == ("visual", 0.90, 0.85)
    assert math.isclose(row["difference"], 0.05)
    md = rep.markdown()
    assert "## FG-BMK protocol next to the corrected one" in md and "+5.00" in md


def test_expected_measured_and_difference_per_cell():
    rep = report([FGBMK, CORRECTED], figures=False, expected=EXPECTED)
    rows = rep.expected.to_dict("records")
    assert [(r["dataset"], r["expected"], r["measured"]) for r in rows][0] == ("cub", 0.8895, 0.90)
    assert math.isclose(rows[0]["difference"], 0.0105)
    assert rows[1]["dataset"] == "cars" and math.isnan(rows[1]["measured"])
    md = rep.markdown()
    assert "## Expected / measured / difference" in md
    assert "| fgbmk_linear | m | cub | top1 | visual | 88.95 | 90.00 | +1.05 | FG-BMK Table 5 |" in md
    assert "| 94.30 | – | – | FG-BMK Table 3 |" in md


def test_the_report_command_reads_a_suites_expected_file(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "fgbmk.json").write_text(json.dumps(FGBMK))
    (folder / "linear.json").write_text(json.dumps(CORRECTED))
    (folder / "expected.json").write_text(json.dumps({"featkit_expected": EXPECTED}))
    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "expected.json" not in printed  # neither a record nor a skipped file
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Expected / measured / difference" in md and "FG-BMK protocol next to" in md
    assert (tmp_path / "rep" / "expected.csv").exists()
    assert (tmp_path / "rep" / "protocols.csv").exists()


def test_a_perturbed_value_is_the_sweeps_largest_budget():
    sweep = _record("perturb", {"clean_top1": 0.9, "sweep": [
        {"eps": 0.0, "top1": 0.9}, {"eps": 0.2, "top1": 0.25}, {"eps": 0.1, "top1": 0.5}]})
    rep = report([sweep], figures=False, expected=[
        {"task": "perturb", "model": "m", "dataset": "cub", "metric": "perturbed_top1",
         "value": 0.2494, "source": "FG-BMK Table 5"}])
    assert rep.expected["measured"].tolist() == [0.25]
