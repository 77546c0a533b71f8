"""``featkit report`` writes what it wrote before the reporting split (issue 14).

The reference outputs in ``data/report/<case>/`` (``report.md``, every CSV, the list of figure
files and the command's stdout) were written by the single-module ``featkit/reporting.py`` with
its literal headline metrics and shift-task order, on the result records built below. The new
package reads those from the task registry; the outputs must not change. The temporary folder
is masked as ``<tmp>``; CSV floats compare to 1e-9 relative, text exactly.

Regenerate (only when a change to the report is intended):
``FEATKIT_WRITE_REPORTS=1 python -m pytest tests/featkit/test_report_unchanged.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from featkit.cli import main
from featkit.results import make_result, write_result

DATA = Path(__file__).parent / "data" / "report"
WRITE = os.environ.get("FEATKIT_WRITE_REPORTS") == "1"

MODELS = ("m-a", "m-b", "m-c", "m-d")
DATASETS = ("cub", "cars", "imagenet", "imagenet-r", "d2", "d10")


def record(task, model, dataset, metrics, features="visual", settings=None, **extra):
    return make_result(task, model=model, dataset=dataset, features=features, metrics=metrics,
                       settings=settings or {}, provenance={}, extra=extra or None)


def sweep_record(model, dataset, clean, points, mode, norm="l2"):
    sweep = [{"eps": 10 * e, "eps_rel": e, "top1": t, "success_rate": 1 - t / clean,
              "mean_delta_norm": 10 * e} for e, t in points]
    return record("perturb", model, dataset, {"clean_top1": clean, "sweep": sweep},
                  settings={"norm": norm, "eps_mode": mode, "space": "feature"})


def write_inputs(root: Path) -> None:
    """Every kind of input the report treats differently: registered tasks with headline and
    other metrics, an unregistered task (``few_shot``, named to sort before the registered ones),
    several feature kinds of one model, two files filling one cell, a merged probe, relative and
    absolute PGD sweeps, a JSON list, a null metric, and files that are not records."""
    for i, model in enumerate(MODELS):
        for j, dataset in enumerate(DATASETS):
            base = 0.35 + 0.11 * i + 0.017 * j - 0.21 * (dataset == "imagenet-r")
            base += 0.04 * ((i * 7 + j * 3) % 5)  # rank changes between datasets
            lp = {"top1": base, "top5": min(1.0, base + 0.2), "mean_per_class": base - 0.013}
            write_result(record("linear_probe", model, dataset, lp),
                         root / "lp" / f"{model}_{dataset}.json")
            ret = {"mAP": base - 0.12, "mAP@R": base - 0.19, "R-precision": None if j == 1 else
                   base - 0.15, "P@1": base + 0.02}
            write_result(record("retrieval", model, dataset, ret),
                         root / "ret" / f"{model}_{dataset}.json")
            few = {"top1": base - 0.05 + 0.004 * i * j, "top5": base + 0.1,
                   "top1_k10": base - 0.1 + 0.01 * j}
            write_result(record("few_shot", model, dataset, few),
                         root / "few" / f"{model}_{dataset}.json")
        knn = [record("knn", model, d, {"top1": 0.3 + 0.1 * i + k / 17,
                                        "top1_k10": 0.31 + k / 50 + 0.05 * i})
               for k, d in enumerate(DATASETS)]
        write_result(knn, root / f"knn_{model}.json")
    write_result(record("retrieval", "m-a", "cub", {"mAP": 0.5}, features="aligned"),
                 root / "kinds" / "aligned.json")
    write_result(record("retrieval", "m-a", "cub", {"mAP": 0.45}, features="aligned"),
                 root / "kinds" / "aligned2.json")
    per = {"cub": {"single": 0.8, "merged": 0.75, "drop": 0.05},
           "cars": {"single": 0.9, "merged": 0.86, "drop": 0.04}}
    write_result(record("linear_probe", "m-a", "cub,cars", {"top1": 0.8}, per_dataset=per,
                        mean_drop=0.045), root / "merged.json")
    write_result(sweep_record("m-a", "cub", 0.8, [(0.01, 0.7), (0.05, 0.4), (0.1, 0.2)],
                              "relative"), root / "pgd" / "rel.json")
    write_result(sweep_record("m-b", "cub", 0.85, [(0.01, 0.6), (0.2, 0.1)], "absolute",
                              norm="linf"), root / "pgd" / "abs.json")
    (root / "notes.json").write_text(json.dumps({"hello": "world"}))
    (root / "broken.json").write_text("{not json")


CASES: dict[str, list[str]] = {
    "headline": ["--shift", "imagenet:imagenet-r"],
    "all-logit": ["--metrics", "all", "--shift", "imagenet:imagenet-r", "--shift", "cub:cars",
                  "--transform", "logit", "--baseline", "m-a,m-b,m-zz", "--alpha", "0.1",
                  "--perturb-eps", "0.04"],
    "top1-retrieval-shift": ["--metrics", "top1,mAP@R", "--shift", "d2:d10", "--shift-task",
                             "retrieval", "--shift-metric", "mAP"],
    "knn-before-unregistered": ["--metrics", "top5", "--shift", "imagenet:imagenet-r",
                                "--shift-metric", "top1_k10", "--shift", "in:out"],
}


def run_case(name: str, tmp_path: Path, capsys) -> dict[str, str]:
    root = tmp_path / "results"
    write_inputs(root)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["report", str(root), "--out", str(out), "--dpi", "20", *CASES[name]]) == 0
    stdout = capsys.readouterr().out
    files = {"stdout.txt": stdout,
             "figures.json": json.dumps(sorted(p.name for p in out.glob("*.png")), indent=1)}
    for path in sorted(out.iterdir()):
        if path.suffix in (".md", ".csv"):
            files[path.name] = path.read_text()
    return {k: v.replace(str(tmp_path), "<tmp>") for k, v in files.items()}


def assert_csv_equal(got: str, expected: str, name: str) -> None:
    from io import StringIO

    left, right = pd.read_csv(StringIO(got)), pd.read_csv(StringIO(expected))
    assert list(left.columns) == list(right.columns), name
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9, obj=name)


@pytest.mark.parametrize("name", list(CASES))
def test_report_outputs_unchanged(name, tmp_path, capsys):
    files = run_case(name, tmp_path, capsys)
    folder = DATA / name
    if WRITE:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for file, text in files.items():
            (folder / file).write_text(text)
        pytest.skip("reference outputs written")
    expected = {p.name: p.read_text() for p in folder.iterdir()}
    assert sorted(files) == sorted(expected)
    for file, text in files.items():
        if file.endswith(".csv"):
            assert_csv_equal(text, expected[file], file)
        else:
            assert text == expected[file], file
