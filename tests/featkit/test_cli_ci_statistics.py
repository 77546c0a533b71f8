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
from featkit.testing.attributes import (
    CUB_GROUPS,
    make_attribute_manifest,
    make_cub_attributes,
    write_pairs,
)
from featkit.testing.datasets import make_cub
from probes.binary import tar_at_far
from probes.dg.groups import mean_worst_group
from probes.multilabel import fit_multilabel_probe
from probes.pairs import cosine_scores
from probes.retrieval import METRIC_KEYS

MODEL = "pixels:8"
CI = ["--ci", "0.9", "--ci-resamples", "60", "--ci-seed", "3"]
#: Every value of each group is the typical value of one of the 3 CUB classes, so every
#: attribute has positives and negatives on every resample of the test images.
CUB_TEST_GROUPS = {"has_size": CUB_GROUPS["has_size"],
                   "has_bill_shape": CUB_GROUPS["has_bill_shape"][:3]}
MIN_CERTAINTY = 3
#: Every ENV_GAP-th test row of the manifest has no ``env`` value.
ENV_GAP = 4


def _blank_env(root) -> set[str]:
    """Drop the ``env`` value of every ENV_GAP-th test row; the relpaths left without one."""
    path = root / "test.csv"
    header, *rows = path.read_text().splitlines()
    assert header.split(",")[-1] == "env"
    blank = set()
    for i in range(0, len(rows), ENV_GAP):
        relpath, *rest = rows[i].split(",")
        rows[i] = ",".join([relpath, *rest[:-1], ""])
        blank.add(relpath)
    path.write_text("\n".join([header, *rows]) + "\n")
    return blank


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ci_cache")
    manifest_root = tmp_path_factory.mktemp("megacoin")
    manifest, _ = make_attribute_manifest(manifest_root,
                                          {"bgd": ("white", "green"), "env": ("in", "out")},
                                          n_classes=4, train_per_class=6, val_per_class=3,
                                          test_per_class=15, image_size=16)
    without_env = _blank_env(manifest_root)
    featkit.extract(MODEL, "manifest", data_root=manifest.root, cache_dir=cache, progress=False,
                    num_workers=0)
    cub = make_cub(tmp_path_factory.mktemp("cub"), n_classes=3, train_per_class=8,
                   test_per_class=20, image_size=16)
    cub_truth = make_cub_attributes(cub, CUB_TEST_GROUPS)
    featkit.extract(MODEL, "cub", data_root=cub.root, cache_dir=cache, progress=False,
                    num_workers=0)
    return cache, manifest, without_env, cub_truth


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


def _resamples(n: int, strata: np.ndarray | None = None, resamples: int = 60, seed: int = 3):
    """The item indices of each resample, drawn as probes.bootstrap.resample_statistics
    defines it: one generator per stratum (strata in sorted label order) from
    SeedSequence(seed).spawn(k), or default_rng(seed) without strata."""
    if strata is None:
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            yield rng.integers(0, n, size=n)
        return
    members = [np.flatnonzero(strata == label) for label in np.unique(strata)]
    rngs = [np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(len(members))]
    for _ in range(resamples):
        yield np.concatenate([m[r.integers(0, len(m), size=len(m))]
                              for m, r in zip(members, rngs)])


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC as the share of (positive, negative) pairs ordered right, ties half."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision as scikit-learn defines it: sum over distinct thresholds of the
    recall step times the precision at that threshold."""
    ap, recall_before = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        chosen = scores >= threshold
        recall = positive[chosen].sum() / positive.sum()
        ap += (recall - recall_before) * positive[chosen].mean()
        recall_before = recall
    return float(ap)


def _assert_interval(row: dict, draws: list[float]) -> None:
    assert (row["low"], row["high"]) == pytest.approx(tuple(np.percentile(draws, [5, 95])),
                                                      abs=1e-12)


def test_retrieval_gives_every_metric_per_query_scores_and_an_interval(caches, tmp_path,
                                                                       capsys):
    cache = caches[0]
    record, printed = _run(capsys, tmp_path, "retrieval", "--model", MODEL, "--dataset",
                           "manifest", "--cache-dir", cache, "--no-progress", *CI)
    _check_ci(record, printed, set(), set(METRIC_KEYS))
    assert read_per_item(record, "P@1").binary and not read_per_item(record, "mAP@R").binary
    for row in record["ci"]["metrics"].values():
        assert "gallery held fixed" in row["resampling"]
        assert "leave-one-out" in row["resampling"]


def test_pairs_accuracy_per_pair_and_recomputed_auc_and_tar(caches, tmp_path, capsys):
    cache, manifest = caches[:2]
    ids, labels = manifest.ids("test"), manifest.labels("test")
    path = write_pairs(tmp_path / "pairs.csv", [(ids[i], ids[j], labels[i] == labels[j])
                                                for i in range(len(ids))
                                                for j in range(i + 1, len(ids))])
    record, printed = _run(capsys, tmp_path, "pairs", "--model", MODEL, "--dataset", "manifest",
                           "--pairs", path, "--far", "0.05", "--cache-dir", cache, *CI)
    _check_ci(record, printed, {"roc_auc", "tar_at_far"}, {"accuracy"})
    n_pairs = len(ids) * (len(ids) - 1) // 2
    assert record["ci"]["metrics"]["roc_auc"]["n"] == n_pairs
    resampling = record["ci"]["metrics"]["roc_auc"]["resampling"]
    assert "val threshold fixed" in resampling and "images repeat across pairs" in resampling
    assert not [w for w in record["warnings"] if "tar_at_far interval" in w]

    test = featkit.load(MODEL, "manifest", "test", cache_dir=cache)
    row_of = {sid: i for i, sid in enumerate(test.sample_ids)}
    first, second, same = zip(*[(row_of[ids[i]], row_of[ids[j]], labels[i] == labels[j])
                                for i in range(len(ids)) for j in range(i + 1, len(ids))])
    scores = cosine_scores(test.features[list(first)], test.features[list(second)])
    same = np.asarray(same)
    draws = {"roc_auc": [], "tar_at_far": []}
    for idx in _resamples(n_pairs, same):  # within the same and within the different pairs
        draws["roc_auc"].append(_auroc(scores[idx], same[idx]))
        draws["tar_at_far"].append(tar_at_far(scores[idx], same[idx], 0.05)[0])
    for metric, values in draws.items():
        _assert_interval(record["ci"]["metrics"][metric], values)

    a = tmp_path / "a.json"
    a.write_text(json.dumps(record))
    code = main(["compare", str(a), str(a), "--metric", "roc_auc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no mean over items" in err[0]
    assert main(["compare", str(a), str(a), "--metric", "accuracy"]) == 0
    assert "accuracy" in capsys.readouterr().out

    record, _ = _run(capsys, tmp_path, "pairs", "--model", MODEL, "--dataset", "manifest",
                     "--pairs", path, "--far", "1e-4", "--cache-dir", cache, *CI)
    different = record["counts"]["test_different"]
    assert different < 1e4
    (warning,) = [w for w in record["warnings"] if "tar_at_far interval" in w]
    assert f"{different} different test pairs are fewer than 1 / FAR = 10000" in warning


def test_dg_interval_over_test_items_equals_the_naive_loop(caches, tmp_path, capsys):
    cache = caches[0]
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


def _cub_split(cache, truth, split: str, columns: list[int]):
    """A CUB split's features, attribute targets and certainty mask, read from the generator's
    truth (not from the files featkit parses)."""
    fs = featkit.load(MODEL, "cub", split, cache_dir=cache)
    rows = [truth.sample_ids.index(sid) for sid in fs.sample_ids]
    return (fs.features, truth.present[rows][:, columns],
            truth.certainty[rows][:, columns] >= MIN_CERTAINTY)


def test_attributes_binary_intervals_equal_the_naive_loop_over_masked_labels(caches, tmp_path,
                                                                             capsys):
    cache, truth = caches[0], caches[3]
    record, printed = _run(capsys, tmp_path, "probe", "attributes", "--model", MODEL,
                           "--dataset", "cub", "--attributes", "has_size,has_bill_shape",
                           "--min-certainty", MIN_CERTAINTY, "--l2-grid", "0.01",
                           "--max-iter", 20, "--cache-dir", cache, "--no-progress", *CI)
    _check_ci(record, printed, {"macro_auroc", "map", "mean_group_top1"}, set())
    assert record["ci"]["metrics"]["map"]["unit"] == "test images"
    assert "defined on the test set" in record["ci"]["metrics"]["map"]["resampling"]
    a = tmp_path / "cub.json"
    a.write_text(json.dumps(record))
    code = main(["compare", str(a), str(a)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no mean over items" in err[0]

    names = [f"{g}::{v}" for g in ("has_size", "has_bill_shape") for v in CUB_TEST_GROUPS[g]]
    columns = [truth.names.index(n) for n in names]
    groups = [n.split("::")[0] for n in names]
    train, val, test = (_cub_split(cache, truth, split, columns)
                        for split in ("train", "val", "test"))
    fit = fit_multilabel_probe(train[0], train[1], val[0], val[1], groups=groups,
                               train_mask=train[2], val_mask=val[2], l2_grid=(0.01,),
                               normalization="l2", max_iter=20)
    scores, targets, mask = fit.scores(test[0]), test[1], test[2]
    assert 0 < mask.mean() < 1  # some labels are left out: the mask matters
    group_columns = [[c for c, g in enumerate(groups) if g == group]
                     for group in dict.fromkeys(groups)]

    def naive(rows: np.ndarray) -> dict[str, float]:
        s, t, m = scores[rows], targets[rows], mask[rows]
        out = {}
        for metric, score in (("macro_auroc", _auroc), ("map", _average_precision)):
            out[metric] = np.mean([score(s[m[:, a], a], t[m[:, a], a])
                                   for a in range(len(names))])
        tops = []
        for cols in group_columns:
            shown = (t & m)[:, cols]
            showing = shown.any(axis=1)
            best = np.argmax(s[showing][:, cols], axis=1)
            tops.append(np.mean(shown[showing][np.arange(showing.sum()), best]))
        out["mean_group_top1"] = np.mean(tops)
        return out

    for metric, value in naive(np.arange(len(scores))).items():
        assert record["metrics"][metric] == pytest.approx(value, abs=1e-12), metric
    draws = {metric: [] for metric in ("macro_auroc", "map", "mean_group_top1")}
    for idx in _resamples(len(scores)):
        for metric, value in naive(idx).items():
            draws[metric].append(value)
    for metric, values in draws.items():
        _assert_interval(record["ci"]["metrics"][metric], values)


def test_attributes_categorical_mean_top1_averages_each_attributes_own_rows(caches, tmp_path,
                                                                            capsys):
    cache, manifest, without_env = caches[:3]
    record, printed = _run(capsys, tmp_path, "probe", "attributes", "--model", MODEL,
                           "--dataset", "manifest", "--c-grid", "1,10", "--cache-dir", cache,
                           "--no-progress", *CI)
    _check_ci(record, printed, {"mean_top1"}, {"bgd.top1", "env.top1"})
    test_ids = list(featkit.load(MODEL, "manifest", "test", cache_dir=cache).sample_ids)
    has_env = np.asarray([sid not in without_env for sid in test_ids])
    assert 0 < has_env.sum() < len(test_ids)  # env: fewer rows than bgd
    correct = np.full((len(test_ids), 2), np.nan)
    correct[:, 0] = read_per_item(record, "bgd.top1").values
    correct[has_env, 1] = read_per_item(record, "env.top1").values
    assert read_per_item(record, "env.top1").n == has_env.sum()
    draws = []
    for idx in _resamples(len(test_ids)):
        resampled = correct[idx]
        draws.append(np.mean([np.nanmean(resampled[:, a]) for a in range(2)]))
    _assert_interval(record["ci"]["metrics"]["mean_top1"], draws)


def test_without_ci_the_records_keep_per_item_scores_only(caches, tmp_path, capsys):
    cache = caches[0]
    record, _ = _run(capsys, tmp_path, "probe", "attributes", "--model", MODEL, "--dataset",
                     "manifest", "--c-grid", "1", "--cache-dir", cache, "--no-progress")
    assert "ci" not in record and set(record["per_item"]) == {"bgd.top1", "env.top1"}
    assert set(record["recomputed_metrics"]) == {"mean_top1"}
