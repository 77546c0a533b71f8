"""featkit.reporting (featkit report): collected tables equal the JSON inputs; headline metrics
and the task of a robustness fit come from the task registry; rank tests over the collected
table; effective robustness against points placed on and above a known line; skipped figures;
the CLI. The statistics themselves are tested in test_stats.py, the figures in test_plots.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import featkit
from featkit import reporting as R
from featkit import stats as S
from featkit.errors import FeatkitError
from featkit.results import make_result, write_result
from featkit.tasks import registry
from featkit.tasks.registry import TaskInfo


def record(task, model, dataset, metrics, features="visual", **extra):
    return make_result(task, model=model, dataset=dataset, features=features, metrics=metrics,
                       settings={}, provenance={}, extra=extra or None)


def perturb_record(model, dataset, clean, points, mode="relative"):
    sweep = [{"eps": 10 * e, "eps_rel": e, "top1": t, "success_rate": 1 - t / clean,
              "mean_delta_norm": 10 * e} for e, t in points]
    rec = record("perturb", model, dataset, {"clean_top1": clean, "sweep": sweep})
    rec["settings"] = {"norm": "l2", "eps_mode": mode}
    return rec


# --------------------------------------------------------------------------- collecting


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    rows = {}
    for i, model in enumerate(["m-a", "m-b", "m-c"]):
        for j, dataset in enumerate(["cub", "cars"]):
            top1 = 0.5 + 0.1 * i + 0.013 * j + 1e-9 * (i + 1)
            metrics = {"top1": top1, "top5": min(1.0, top1 + 0.2), "mean_per_class": top1 - 0.01}
            write_result(record("linear_probe", model, dataset, metrics,
                                per_class={"x": 0.5}), root / f"lp/{model}_{dataset}.json")
            rows[("linear_probe", model, dataset)] = metrics
            ret = {"mAP": top1 / 2, "mAP@R": top1 / 3, "R-precision": None}
            write_result(record("retrieval", model, dataset, ret),
                         root / f"ret/{model}_{dataset}.json")
            rows[("retrieval", model, dataset)] = ret
    # several datasets in one JSON list, as `featkit probe knn --dataset a,b` writes
    knn = [record("knn", "m-a", d, {"top1": 0.3 + k / 7, "top1_k10": 0.31}) for k, d in
           enumerate(["cub", "cars"])]
    write_result(knn, root / "knn.json")
    for rec in knn:
        rows[("knn", "m-a", rec["dataset"])] = rec["metrics"]
    (root / "notes.json").write_text(json.dumps({"hello": "world"}))
    (root / "broken.json").write_text("{not json")
    return root, rows


def test_collected_table_equals_the_json_inputs(results_dir):
    root, rows = results_dir
    entries, notes = R.collect_results(root)
    assert len(entries) == len(rows)
    assert any("notes.json" in n and "not a featkit result" in n for n in notes)
    assert any("broken.json" in n and "not valid JSON" in n for n in notes)
    frame = R.results_frame(entries)
    assert len(frame) == sum(len(m) for m in rows.values())
    for (task, model, dataset), metrics in rows.items():
        part = frame[(frame.task == task) & (frame.model == model) & (frame.dataset == dataset)]
        got = dict(zip(part.metric, part.value))
        assert set(got) == set(metrics)
        for key, value in metrics.items():
            if value is None:
                assert math.isnan(got[key])
            else:
                assert got[key] == value  # exact, not approximate


def test_report_tables_csv_and_markdown_equal_the_inputs(results_dir, tmp_path):
    root, rows = results_dir
    rep = R.report(root, figures=False)
    table = rep.tables["linear_probe/top1"]
    assert list(table.index) == ["m-a", "m-b", "m-c"]
    assert list(table.columns) == ["cars", "cub"]
    for (task, model, dataset), metrics in rows.items():
        for key, value in metrics.items():
            cell = rep.tables[f"{task}/{key}"].loc[model, dataset]
            assert (math.isnan(cell) if value is None else cell == value)

    written = rep.write(tmp_path / "out")
    back = pd.read_csv(written["results.csv"])
    for (task, model, dataset), metrics in rows.items():
        part = back[(back.task == task) & (back.model == model) & (back.dataset == dataset)]
        for key, value in metrics.items():
            got = part.loc[part.metric == key, "value"].item()
            assert (math.isnan(got) if value is None else got == value)  # round-trips exactly

    md = written["report.md"].read_text()
    top1 = rows[("linear_probe", "m-b", "cub")]["top1"]
    assert f"| m-b | {100 * rows[('linear_probe', 'm-b', 'cars')]['top1']:.2f} | " \
           f"{100 * top1:.2f} |" in md
    assert "| – |" in md  # R-precision was null


def test_several_kinds_and_duplicate_files_get_distinct_rows(tmp_path):
    write_result(record("retrieval", "m", "cub", {"mAP": 0.4}, features="visual"),
                 tmp_path / "v.json")
    write_result(record("retrieval", "m", "cub", {"mAP": 0.3}, features="aligned"),
                 tmp_path / "a.json")
    write_result(record("retrieval", "m", "cub", {"mAP": 0.2}, features="aligned"),
                 tmp_path / "a2.json")
    rep = R.report(tmp_path, figures=False)
    col = rep.tables["retrieval/mAP"]["cub"]
    assert col.to_dict() == {"m [aligned] (a)": 0.3, "m [aligned] (a2)": 0.2, "m [visual]": 0.4}
    assert any("file name" in n for n in rep.notes)


def test_in_memory_records_and_bad_inputs(tmp_path):
    rep = R.report([record("retrieval", "m", "cub", {"mAP": 0.25})], figures=False)
    assert rep.tables["retrieval/mAP"].loc["m", "cub"] == 0.25
    with pytest.raises(FeatkitError, match="does not exist"):
        R.report(tmp_path / "missing")
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(FeatkitError, match="no result records"):
        R.report(tmp_path)
    with pytest.raises(FeatkitError, match="lacks"):
        R.report([{"task": "x"}])


def test_merged_and_perturbed_frames(tmp_path):
    per = {"cub": {"single": 0.8, "merged": 0.75, "drop": 0.05},
           "cars": {"single": 0.9, "merged": 0.86, "drop": 0.04}}
    merged = record("linear_probe", "m", "cub,cars", {"top1": 0.8}, per_dataset=per,
                    mean_drop=0.045)
    pert = perturb_record("m", "cub", 0.8, [(0.01, 0.7), (0.05, 0.4), (0.1, 0.1)])
    rep = R.report([merged, pert], figures=False)
    assert rep.merged.set_index("dataset")[["single", "merged", "drop"]].to_dict("index") == per
    assert rep.perturbed[["clean", "perturbed", "eps_rel"]].iloc[0].tolist() == [0.8, 0.1, 0.1]
    nearest = R.report([pert], perturb_eps=0.04, figures=False).perturbed
    assert nearest[["perturbed", "eps_rel"]].iloc[0].tolist() == [0.4, 0.05]
    assert len(rep.sweeps) == 3 and rep.sweeps["top1"].tolist() == [0.7, 0.4, 0.1]


# --------------------------------------------------------------------------- task registry


@pytest.fixture
def zero_shot(monkeypatch):
    """A task registered for one test only. The registry's own modules are imported first, so
    nothing they register is lost when this one is taken out again."""
    registry.tasks()
    info = TaskInfo(name="zero_shot", title="zero-shot", headline=("top5",),
                    columns=("top1", "top5"), module=__name__, shift_priority=-1)
    monkeypatch.setitem(registry._TASKS, info.name, info)
    return info


def test_headline_metrics_come_from_the_registry(zero_shot):
    metrics = {"top1": 0.5, "top5": 0.7, "mAP": 0.3, "mAP@R": 0.2}
    rows = [record(task, "m", "cub", metrics) for task in ("retrieval", "zero_shot", "other")]
    frame = R.results_frame([("", r) for r in rows])
    assert R.select_metrics(frame) == [
        ("other", "mAP"), ("other", "mAP@R"), ("other", "top1"), ("other", "top5"),
        ("retrieval", "mAP"), ("retrieval", "mAP@R"), ("zero_shot", "top5")]
    md = R.report(rows, figures=False).markdown()
    assert md.index("## zero_shot: top5") < md.index("## zero_shot: top1")  # headline first


def test_robustness_fit_takes_the_task_the_registry_ranks_first(zero_shot):
    records = [record(task, f"m{i}", d, {"top1": acc - 0.2 * (d == "out")})
               for task in ("linear_probe", "zero_shot", "other")
               for i, acc in enumerate((0.5, 0.6, 0.7)) for d in ("in", "out")]
    rep = R.report(records, shifts=["in:out"], figures=False)
    assert rep.robustness["in:out"].task == "zero_shot"
    assert R.shift_task_order(["other", "retrieval", "perturb", "knn", "linear_probe",
                               "zero_shot"]) == ["zero_shot", "linear_probe", "knn",
                                                 "retrieval", "other", "perturb"]


def test_the_package_keeps_the_module_api():
    assert featkit.report is R.report
    assert all(hasattr(R, name) for name in R.__all__)


# --------------------------------------------------------------------------- rank statistics


def test_rank_test_skips_and_drops():
    rows = [record("retrieval", m, d, {"mAP": 0.1 * i + 0.01 * j})
            for i, m in enumerate(["a", "b"]) for j, d in enumerate(["x", "y", "z"])]
    frame = R.results_frame([("", r) for r in rows])
    test, why = R.rank_test_for(frame, "retrieval", "mAP")
    assert test is None and "have 2 system(s) on 3" in why
    rows += [record("retrieval", "c", d, {"mAP": 0.5}) for d in ["x", "y"]]
    frame = R.results_frame([("", r) for r in rows])
    test, note = R.rank_test_for(frame, "retrieval", "mAP")
    assert test is not None and test.n == 2 and test.dropped_datasets == ("z",)
    assert "z" in note


# --------------------------------------------------------------------------- effective robustness


@pytest.mark.parametrize("transform", ["probit", "logit"])
def test_effective_robustness_on_and_above_the_line(transform):
    slope, intercept = 0.9, -0.4
    ref = np.array([0.3, 0.5, 0.7, 0.85])
    on_line = S.inverse_transform(slope * S.transform_accuracy(ref, transform) + intercept,
                                  transform)
    fit = S.fit_robustness_line(ref, on_line, transform)
    assert fit == pytest.approx((slope, intercept), abs=1e-9)

    new_ref = 0.6
    predicted = float(S.inverse_transform(slope * S.transform_accuracy(new_ref, transform)
                                          + intercept, transform))
    records = [record("linear_probe", f"base{i}", "imagenet", {"top1": float(a)})
               for i, a in enumerate(ref)]
    records += [record("linear_probe", f"base{i}", "imagenet-r", {"top1": float(a)})
                for i, a in enumerate(on_line)]
    for name, shifted in [("exact", predicted), ("above", predicted + 0.05)]:
        records += [record("linear_probe", name, "imagenet", {"top1": new_ref}),
                    record("linear_probe", name, "imagenet-r", {"top1": shifted})]
    rep = R.report(records, shifts=["imagenet:imagenet-r"], transform=transform,
                   baseline="base0,base1,base2,base3", figures=False)
    points = rep.robustness["imagenet:imagenet-r"].points.set_index("system")
    assert points.loc["exact", "effective_robustness"] == pytest.approx(0.0, abs=1e-9)
    assert points.loc["above", "effective_robustness"] == pytest.approx(5.0, abs=1e-9)
    assert not points.loc["above", "baseline"] and points.loc["base2", "baseline"]
    assert points.loc["base1", "effective_robustness"] == pytest.approx(0.0, abs=1e-9)


def test_robustness_skips_with_too_few_baselines():
    records = [record("linear_probe", "a", "in", {"top1": 0.5}),
               record("linear_probe", "a", "out", {"top1": 0.3}),
               record("linear_probe", "b", "in", {"top1": 0.6})]
    rep = R.report(records, shifts=["in:out"], figures=False)
    assert rep.robustness == {}
    assert "needs >= 2 baseline systems" in rep.skipped["effective_robustness_in_out"]
    rep = R.report(records, figures=False)
    assert "no --shift" in rep.skipped["effective_robustness"]
    with pytest.raises(FeatkitError, match="REF:SHIFTED"):
        R.report(records, shifts=["in-out"], figures=False)


# --------------------------------------------------------------------------- figures and CLI


def small_set() -> list[dict]:
    records = []
    for i, model in enumerate(["m-a", "m-b", "m-c"]):
        for j, dataset in enumerate(["cub", "cars", "imagenet", "imagenet-r"]):
            top1 = 0.4 + 0.15 * i - 0.2 * (dataset == "imagenet-r") + 0.02 * j
            records.append(record("linear_probe", model, dataset, {"top1": top1}))
            records.append(record("retrieval", model, dataset, {"mAP": top1 - 0.1,
                                                                  "mAP@R": top1 - 0.2}))
    per = {"cub": {"single": 0.8, "merged": 0.75, "drop": 0.05},
           "cars": {"single": 0.9, "merged": 0.86, "drop": 0.04}}
    records.append(record("linear_probe", "m-a", "cub,cars", {"top1": 0.8}, per_dataset=per,
                          mean_drop=0.045))
    records.append(perturb_record("m-a", "cub", 0.8, [(0.01, 0.7), (0.1, 0.2)]))
    return records


def test_report_writes_every_figure(tmp_path):
    rep = R.report(small_set(), tmp_path / "out", shifts=["imagenet:imagenet-r"], dpi=50)
    expected = {"bars_linear_probe_top1", "bars_retrieval_mAP", "bars_retrieval_mAP_at_R",
                "cd_linear_probe_top1", "cd_retrieval_mAP", "cd_retrieval_mAP_at_R",
                "effective_robustness_imagenet_imagenet-r", "merged_vs_single",
                "clean_vs_perturbed", "accuracy_vs_eps"}
    assert set(rep.figures) == expected
    for name in expected:
        path = tmp_path / "out" / f"{name}.png"
        assert path.stat().st_size > 2000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Friedman" in md and "CD" in md and "Effective robustness" in md
    for name in expected:
        assert f"`{name}.png`" in md


def test_too_few_inputs_skip_figures_with_a_note(tmp_path):
    rep = R.report([record("retrieval", "m", "cub", {"mAP": 0.4})], tmp_path / "out", dpi=50)
    assert set(rep.figures) == {"bars_retrieval_mAP"}
    assert "needs >= 3 systems" in rep.skipped["cd_retrieval_mAP"]
    assert "no merged probe results" in rep.skipped["merged_vs_single"]
    assert "no perturb results" in rep.skipped["clean_vs_perturbed"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "skipped `cd_retrieval_mAP`" in md


def test_cli_report(tmp_path, capsys):
    from featkit.cli import main

    for i, rec in enumerate(small_set()):
        write_result(rec, tmp_path / "res" / f"r{i}.json")
    code = main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "out"),
                 "--shift", "imagenet:imagenet-r", "--baseline", "m-a,m-b",
                 "--metrics", "top1", "--transform", "logit", "--dpi", "50"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Nemenyi CD (alpha = 0.05) = " in out and "Friedman chi2" in out
    assert "m-c: effective robustness" in out
    assert (tmp_path / "out" / "cd_linear_probe_top1.png").stat().st_size > 0
    assert not (tmp_path / "out" / "bars_retrieval_mAP.png").exists()
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
