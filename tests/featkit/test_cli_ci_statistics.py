"""``--ci`` on the metrics that are no plain item means: retrieval's every metric, pairs,
``probe dg`` and ``probe attributes`` write ``ci`` and print it; recomputed statistics say so in
the record, and ``featkit compare`` refuses them in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import featkit
from featkit.cli import main
from featkit.tasks.intervals import RECOMPUTED_METHOD, read_per_item
from featkit.testing.attributes import make_attribute_manifest, make_cub_attributes, write_pairs
from featkit.testing.datasets import make_cub
from probes.dg.groups import mean_worst_group
from probes.retrieval import METRIC_KEYS

MODEL = "pixels:8"
CI = ["--ci", "0.9", "--ci-resamples", "60", "--ci-seed", "3"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ci_cache")
    manifest, _ = make_attribute_manifest(tmp_path_factory.mktemp("megacoin"),
                                          {"bgd": ("white", "green"), "env": ("in", "out")},
                                          n_classes=4, train_per_class=6, val_per_class=3,
                                          test_per_class=15, image_size=16)
    featkit.extract(MODEL, "manifest", data_root=manifest.root, cache_dir=cache, progress=False,
                    num_workers=0)
    cub = make_cub(tmp_path_factory.mktemp("cub"), n_classes=3, train_per_class=6,
                   test_per_class=4, image_size=16)
    make_cub_attributes(cub)
    featkit.extract(MODEL, "cub", data_root=cub.root, cache_dir=cache, progress=False,
                    num_workers=0)
    return cache, manifest


def _run(capsys, tmp_path, *argv) -> tuple[dict, str]:
    out = tmp_path / "r.json"
    code = main([*map(str, argv), "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(out.read_text()), captured.out


def _check_ci(record: dict, printed: str, recomputed: set[str], per_item: set[str]) -> None:
    ci = record["ci"]
    assert (ci["level"], ci["resamples"], ci["seed"]) == (0.9, 60, 3)
    assert "90% percentile bootstrap intervals (60 resamples, seed 3)" in printed
    assert set(ci["metrics"]) == recomputed | per_item
    assert set(record.get("recomputed_metrics", {})) == recomputed
    assert set(record["per_item"]) >= per_item
    for metric, row in ci["metrics"].items():
        assert row["low"] <= row["estimate"] <= row["high"], metric
        assert row["estimate"] == pytest.approx(record["metrics"][metric], abs=1e-12), metric
        assert (row.get("method") == RECOMPUTED_METHOD) == (metric in recomputed), metric
        assert f"  {metric}: " in printed
    for metric in per_item:
        values = read_per_item(record, metric).values
        assert values.mean() == pytest.approx(record["metrics"][metric], abs=1e-6), metric
    if recomputed:
        assert "(recomputed per resample)" in printed


def test_retrieval_gives_every_metric_per_query_scores_and_an_interval(caches, tmp_path,
                                                                       capsys):
    cache, _ = caches
    record, printed = _run(capsys, tmp_path, "retrieval", "--model", MODEL, "--dataset",
                           "manifest", "--cache-dir", cache, "--no-progress", *CI)
    _check_ci(record, printed, set(), set(METRIC_KEYS))
    assert read_per_item(record, "P@1").binary and not read_per_item(record, "mAP@R").binary


def test_pairs_accuracy_per_pair_and_recomputed_auc_and_tar(caches, tmp_path, capsys):
    cache, manifest = caches
    ids, labels = manifest.ids("test"), manifest.labels("test")
    path = write_pairs(tmp_path / "pairs.csv", [(ids[i], ids[j], labels[i] == labels[j])
                                                for i in range(len(ids))
                                                for j in range(i + 1, len(ids))])
    record, printed = _run(capsys, tmp_path, "pairs", "--model", MODEL, "--dataset", "manifest",
                           "--pairs", path, "--far", "0.05", "--cache-dir", cache, *CI)
    _check_ci(record, printed, {"roc_auc", "tar_at_far"}, {"accuracy"})
    n_pairs = len(ids) * (len(ids) - 1) // 2
    assert record["ci"]["metrics"]["roc_auc"]["n"] == n_pairs
    assert "val threshold fixed" in record["ci"]["metrics"]["roc_auc"]["resampling"]

    a = tmp_path / "a.json"
    a.write_text(json.dumps(record))
    code = main(["compare", str(a), str(a), "--metric", "roc_auc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no mean over items" in err[0]
    assert main(["compare", str(a), str(a), "--metric", "accuracy"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_dg_interval_over_test_items_equals_the_naive_loop(caches, tmp_path, capsys):
    cache, _ = caches
    predictions = tmp_path / "pred.npz"
    record, printed = _run(capsys, tmp_path, "probe", "dg", "--model", MODEL, "--dataset",
                           "manifest", "--group-by", "class,bgd", "--algorithms", "erm,groupdro",
                           "--seeds", 2, "--steps", 10, "--grid", "groupdro=0.1",
                           "--save-predictions", predictions, "--cache-dir", cache,
                           "--no-progress", *CI)
    algorithms = ("erm", "groupdro")
    _check_ci(record, printed, {f"{a}.worst_group" for a in algorithms},
              {f"{a}.average" for a in algorithms})
    assert "2 seeds" in record["ci"]["metrics"]["erm.worst_group"]["resampling"]

    saved = np.load(predictions)
    groups, labels = saved["groups"], saved["labels"]
    draws = {a: [] for a in algorithms}
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rngs = [np.random.default_rng(c) for c in np.random.SeedSequence(3).spawn(len(members))]
    for _ in range(60):  # the defining loop: every group resampled within itself
        idx = np.concatenate([m[r.integers(0, len(m), size=len(m))]
                              for m, r in zip(members, rngs)])
        for a in algorithms:
            correct = (saved[f"pred_{a}"] == labels).T
            draws[a].append(mean_worst_group(correct[idx], groups[idx]))
    for a in algorithms:
        row = record["ci"]["metrics"][f"{a}.worst_group"]
        assert (row["low"], row["high"]) == pytest.approx(
            tuple(np.percentile(draws[a], [5, 95])), abs=1e-12)


def test_attributes_binary_and_categorical(caches, tmp_path, capsys):
    cache, _ = caches
    record, printed = _run(capsys, tmp_path, "probe", "attributes", "--model", MODEL,
                           "--dataset", "cub", "--attributes", "has_size,has_bill_shape",
                           "--l2-grid", "0.01", "--max-iter", 20, "--cache-dir", cache,
                           "--no-progress", *CI)
    _check_ci(record, printed, {"macro_auroc", "map", "mean_group_top1"}, set())
    assert record["ci"]["metrics"]["map"]["unit"] == "test images"
    a = tmp_path / "cub.json"
    a.write_text(json.dumps(record))
    code = main(["compare", str(a), str(a)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no mean over items" in err[0]

    record, printed = _run(capsys, tmp_path, "probe", "attributes", "--model", MODEL,
                           "--dataset", "manifest", "--c-grid", "1,10", "--cache-dir", cache,
                           "--no-progress", *CI)
    _check_ci(record, printed, {"mean_top1"}, {"bgd.top1", "env.top1"})


def test_without_ci_the_records_keep_per_item_scores_only(caches, tmp_path, capsys):
    cache, _ = caches
    record, _ = _run(capsys, tmp_path, "probe", "attributes", "--model", MODEL, "--dataset",
                     "manifest", "--c-grid", "1", "--cache-dir", cache, "--no-progress")
    assert "ci" not in record and set(record["per_item"]) == {"bgd.top1", "env.top1"}
    assert set(record["recomputed_metrics"]) == {"mean_top1"}
