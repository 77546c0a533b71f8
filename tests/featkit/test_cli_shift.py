"""``featkit shift``, ``featkit compare`` and ``featkit report --shift`` end to end on generated
ImageNet trees: records one per shifted set, a paired comparison, the robustness figure."""

from __future__ import annotations

import json

import pytest

import featkit
from featkit.cli import main
from featkit.testing import imagenet as gen

MODELS = ("pixels:4", "pixels:6", "pixels:8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_shift")
    cache = root / "cache"
    trees = {"imagenet": gen.make_imagenet(root / "imagenet", train_per_class=8,
                                           test_per_class=4),
             "imagenet-r": gen.make_imagenet_r(root / "r", per_class=4),
             "objectnet": gen.make_objectnet(root / "objectnet")}
    for model in MODELS:
        for name, tree in trees.items():
            featkit.extract(model, name, data_root=tree.root, cache_dir=cache, progress=False,
                            num_workers=0,
                            splits=("train", "val", "test") if name == "imagenet" else ("test",))
    return {"root": root, "cache": cache}


def _shift(workspace, model: str, *extra: str) -> list[dict]:
    out = workspace["root"] / "results" / f"{model.replace(':', '')}.json"
    argv = ["shift", "--model", model, "--eval", "imagenet-r,objectnet", "--c-grid", "1,10,100",
            "--cache-dir", str(workspace["cache"]), "--json", str(out), "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_shift_writes_one_record_per_set_and_intervals(workspace, capsys):
    records = _shift(workspace, "pixels:8", "--ci", "0.9", "--ci-resamples", "200")
    out = capsys.readouterr().out
    assert [r["dataset"] for r in records] == ["imagenet-r", "objectnet"]
    assert "imagenet top1 (same classes)" in out and "shifted 90% CI" in out
    for record in records:
        assert record["ci"]["level"] == 0.9 and record["ci"]["resamples"] == 200
        assert set(record["per_item"]) == {"top1", "reference_top1"}


def test_compare_and_report(workspace, capsys, tmp_path):
    for model in MODELS:
        _shift(workspace, model)
    results = workspace["root"] / "results"
    capsys.readouterr()
    out = tmp_path / "cmp.json"
    assert main(["compare", str(results / "pixels8.json"), str(results / "pixels4.json"),
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "McNemar p" in printed and "imagenet-r" in printed and "objectnet" in printed
    rows = json.loads(out.read_text())
    assert [r["dataset"] for r in rows] == ["imagenet-r", "objectnet"]
    assert rows[0]["kind"] == "paired comparison" and "mcnemar" in rows[0]
    assert main(["compare", str(results / "pixels8.json"), str(results / "pixels8.json")]) == 0
    assert "+0.00" in capsys.readouterr().out


def test_report_reads_shift_records(tmp_path, capsys):
    """The generated trees are too easy to spread models along a line, so the records are
    written as the task writes them, with accuracies that do."""
    from featkit.results import write_result
    from tests.featkit.test_report_shift import MODELS as POINTS
    from tests.featkit.test_report_shift import shift_record

    for i, (model, (ref, shifted)) in enumerate(POINTS.items()):
        write_result([shift_record(model, ref, shifted, i)], tmp_path / "in" / f"{model}.json")
    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "in"), "--out", str(report), "--shift",
                 "imagenet:imagenet-r", "--baseline", "m-a,m-b,m-c", "--ci-resamples",
                 "200"]) == 0
    printed = capsys.readouterr().out
    assert "imagenet -> imagenet-r (shift top1" in printed
    assert "clip: effective robustness +" in printed and "[" in printed
    assert (report / "effective_robustness_imagenet_imagenet-r.png").is_file()
    md = (report / "report.md").read_text()
    assert "percentile bootstrap over test items (200 resamples" in md and "slope [" in md
    assert "ER 95%" in md


def test_bad_arguments_are_one_line(workspace, capsys):
    base = ["--model", "pixels:8", "--cache-dir", str(workspace["cache"])]
    assert main(["shift", *base, "--classifier", "knn", "--probe", "x.npz"]) == 2
    assert "needs --classifier linear" in capsys.readouterr().err
    assert main(["shift", *base, "--roots", "objectnet"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["compare", "missing.json", "missing.json"]) == 2
    assert "does not exist" in capsys.readouterr().err
