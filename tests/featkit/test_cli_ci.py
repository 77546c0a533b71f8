"""``--ci`` on every analysis command: applied (intervals in the record and printed) or refused
in one line, never ignored."""

from __future__ import annotations

import json

import pytest

from featkit.cli import main

BASE = ["--model", "pixels:8", "--dataset", "digits", "--no-progress"]
CASES = {
    "probe-linear": ["probe", "linear", *BASE, "--c-grid", "1,10"],
    "probe-knn": ["probe", "knn", *BASE, "--k", "5"],
    "retrieval": ["retrieval", *BASE],
    "perturb": ["perturb", *BASE, "--steps", "2", "--eps", "0,0.05", "--eps-rel",
                "--c-grid", "1,10"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_ci_is_applied(case, digits_cache, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [*CASES[case], "--ci", "0.9", "--ci-resamples", "100", "--ci-seed", "4",
            "--cache-dir", str(digits_cache), "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    ci = record["ci"]
    assert (ci["level"], ci["resamples"], ci["seed"]) == (0.9, 100, 4)
    assert "90% percentile bootstrap intervals (100 resamples, seed 4)" in printed
    assert set(ci["metrics"]) <= set(record["per_item"])


def test_ci_is_refused_where_there_are_no_per_item_scores(digits_cache, capsys):
    argv = ["retrieval", *BASE, "--protocol", "fgbmk", "--ci", "0.95",
            "--cache-dir", str(digits_cache)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ci is not available" in err[0]
