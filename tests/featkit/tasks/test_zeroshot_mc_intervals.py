"""Per-item scores and ``--ci`` intervals of the zero-shot and multiple-choice tasks (issue 18):
the per-item scores are the images' (questions') own correctness, in the order of their ids,
with means equal to the metrics; the intervals are the defining resampling loop; two models'
records compare item by item."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featkit.cli import main
from featkit.tasks import FeatureSource, mc, zeroshot
from featkit.tasks.intervals import Interval, ids_digest, read_per_item
from probes.bootstrap import mcnemar, paired_bootstrap
from tests.featkit.tasks.test_zeroshot import _digit_images, _independent_scores

CI = Interval(0.9, 200, 3)


def naive_interval(values, level, resamples, seed):
    """The loop of probes.bootstrap's docstring, written out."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=np.float64)
    stats = [values[rng.integers(0, len(values), size=len(values))].mean()
             for _ in range(resamples)]
    return tuple(np.percentile(stats, [50.0 * (1 - level), 50.0 * (1 + level)]))


def naive_stratified(values, sizes, level, resamples, seed):
    """Each stratum resampled from its own spawned generator; the mean over all items."""
    values = np.asarray(values, dtype=np.float64)
    total = np.zeros(resamples)
    start = 0
    for child, size in zip(np.random.SeedSequence(seed).spawn(len(sizes)), sizes):
        rng, part = np.random.default_rng(child), values[start:start + size]
        total += [part[rng.integers(0, size, size=size)].sum() for _ in range(resamples)]
        start += size
    return tuple(np.percentile(total / len(values), [50.0 * (1 - level), 50.0 * (1 + level)]))


def check_interval(record, metric):
    """The record's interval of ``metric`` is the naive loop's, and holds the estimate."""
    items = read_per_item(record, metric)
    row = record["ci"]["metrics"][metric]
    sizes = [n for _, n in items.strata]
    want = (naive_stratified(items.values, sizes, CI.level, CI.resamples, CI.seed) if sizes
            else naive_interval(items.values, CI.level, CI.resamples, CI.seed))
    assert (row["low"], row["high"]) == pytest.approx(want, abs=1e-12)
    assert row["low"] <= row["estimate"] == record["metrics"][metric] <= row["high"]
    assert row["high"] > row["low"]
    return items


@pytest.fixture(scope="module")
def clip_model():
    import open_clip

    from extractors.tiny import TINY_CLIP_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return open_clip.CLIP(**TINY_CLIP_CONFIG).eval()


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A second CLIP-style model (transformers CLIP) on the same digits test images."""
    from featkit.extraction import extract

    root = tmp_path_factory.mktemp("hf_clip")
    extract("test:tiny-hf-clip", "digits", splits=["test"], features=["aligned"], cache_dir=root,
            progress=False, num_workers=0)
    return root


def test_zero_shot_per_item_scores_are_each_images_correctness(digits_cache, clip_model):
    source = FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache)
    (record,) = zeroshot.run(source, ["digits"], zeroshot.Settings(ci=CI), progress=False)
    top1, top5 = read_per_item(record, "top1"), read_per_item(record, "top5")
    assert top1.values.mean() == record["metrics"]["top1"]
    assert top5.values.mean() == record["metrics"]["top5"]
    assert top1.binary and top1.n == top5.n == record["counts"]["test"] == 450
    ids = source.load("digits", "test").sample_ids
    assert top1.ids_sha256 == top5.ids_sha256 == ids_digest(ids)
    # open_clip's own scores of the same images, matched to the record's items by sample id
    from featkit.datasets import open_dataset

    images, labels = _digit_images()
    scores = _independent_scores(clip_model, ["a photo of a {}."], images)
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = {s.sample_id: int(np.flatnonzero(o == y)[0])
            for s, o, y in zip(open_dataset("digits").samples("test"), order, labels)}
    np.testing.assert_array_equal(top1.values, [rank[i] == 0 for i in ids])
    np.testing.assert_array_equal(top5.values, [rank[i] < 5 for i in ids])
    check_interval(record, "top1")
    check_interval(record, "top5")
    assert set(record["ci"]["metrics"]) == {"top1", "top5"}  # mean_per_class: no interval
    (plain,) = zeroshot.run(source, ["digits"], progress=False)
    assert "ci" not in plain and plain["per_item"] == record["per_item"]
    assert plain["metrics"] == record["metrics"]


def test_zero_shot_merged_runs_resample_within_each_dataset(tmp_path):
    from featkit.extraction import extract
    from featkit.testing.datasets import make_imagefolder

    cache = tmp_path / "cache"
    folder = make_imagefolder(tmp_path / "folder", n_classes=3, train_per_class=2,
                              test_per_class=5)
    for dataset, root in (("imagefolder", folder.root), ("digits", None)):
        extract("test:tiny-clip", dataset, data_root=root, cache_dir=cache, splits=["test"],
                progress=False, num_workers=0)
    source = FeatureSource("test:tiny-clip", "aligned", cache_dir=cache)
    (record,) = zeroshot.run(source, ["digits", "imagefolder"],
                             zeroshot.Settings(merge=True, templates="dataset", ci=CI),
                             progress=False)
    items = check_interval(record, "top1")
    check_interval(record, "top5")
    assert items.values.mean() == record["metrics"]["top1"]
    assert items.strata == (("digits", 450), ("imagefolder", 15))
    per = record["ci"]["metrics"]["top1"]["per_stratum"]
    for name in ("digits", "imagefolder"):
        assert per[name]["estimate"] == pytest.approx(record["per_dataset"][name]["merged"],
                                                      abs=1e-12)


def test_zero_shot_cli_writes_and_prints_the_intervals_and_compares(digits_cache, hf_cache,
                                                                     tmp_path, capsys):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    ci = ["--ci", "0.9", "--ci-resamples", "200", "--ci-seed", "3", "--no-progress"]
    assert main(["zeroshot", "--model", "test:tiny-clip", "--dataset", "digits",
                 "--cache-dir", str(digits_cache), "--json", str(a), *ci]) == 0
    printed = capsys.readouterr().out
    record = json.loads(a.read_text())
    assert (record["ci"]["level"], record["ci"]["resamples"], record["ci"]["seed"]) == (0.9, 200, 3)
    assert "90% percentile bootstrap intervals (200 resamples, seed 3)" in printed
    row = record["ci"]["metrics"]["top1"]
    assert f"top1: {100 * row['estimate']:.2f} [{100 * row['low']:.2f}, " in printed
    assert main(["zeroshot", "--model", "test:tiny-hf-clip", "--dataset", "digits",
                 "--cache-dir", str(hf_cache), "--json", str(b), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--ci", "0.9", "--ci-resamples", "300",
                 "--json", str(out)]) == 0
    assert "zeroshot" in capsys.readouterr().out
    (comparison,) = json.loads(out.read_text())
    left, right = read_per_item(record, "top1"), read_per_item(json.loads(b.read_text()), "top1")
    want = paired_bootstrap(left.values, right.values, level=0.9, resamples=300, seed=0)
    assert comparison["metric"] == "top1" and comparison["n"] == 450
    assert (comparison["ci"]["low"], comparison["ci"]["high"]) == (want.low, want.high)
    assert comparison["difference"] == pytest.approx(
        record["metrics"]["top1"] - json.loads(b.read_text())["metrics"]["top1"], abs=1e-12)
    exact = mcnemar(left.values, right.values)
    assert comparison["mcnemar"]["only_a_correct"] == exact.only_a > 0
    assert comparison["mcnemar"]["pvalue"] == exact.pvalue


@pytest.mark.parametrize("argv", [
    ["zeroshot", "--model", "test:tiny-clip", "--dataset", "digits"],
    ["mc", "score", "--model", "test:tiny-clip", "--questions", "q.jsonl"],
    ["probe", "taxonomy", "--model", "pixels:8", "--dataset", "digits", "--hierarchy", "t.csv"],
])
def test_a_bad_level_is_one_line(argv, capsys):
    try:
        code = main([*argv, "--ci", "95"])
    except SystemExit as exit:  # argparse errors
        code = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--ci" in err[0] and "'95'" in err[0]


@pytest.fixture(scope="module")
def questions(digits_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("mc_ci") / "digits.jsonl"
    assert main(["mc", "build", "--dataset", "digits", "--distractors", "clip:test:tiny-clip",
                 "--choices", "4", "--limit", "120", "--seed", "1", "--out", str(out),
                 "--cache-dir", str(digits_cache), "--no-progress"]) == 0
    return out


def test_mc_per_item_scores_are_each_questions_correctness(questions, digits_cache, tmp_path):
    settings = mc.ScoreSettings(ci=CI)
    scored = mc.score("test:tiny-clip", questions, settings, cache_dir=digits_cache,
                      progress=False)
    record = scored.record
    items = read_per_item(record, "top1")
    assert items.values.mean() == record["metrics"]["top1"] and items.unit == "questions"
    np.testing.assert_array_equal(items.values, [p["correct"] for p in scored.predictions])
    assert items.n == 120 and not items.strata
    check_interval(record, "top1")
    assert set(record["ci"]["metrics"]) == {"top1"}
    plain = mc.score("test:tiny-clip", questions, cache_dir=digits_cache, progress=False).record
    assert "ci" not in plain and plain["per_item"] == record["per_item"]
    # the suite/API entry point passes ci through to the scoring
    run = mc.run(FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache), "digits",
                 mc.Settings(distractors="random", limit=30, ci=CI), progress=False)
    check_interval(run.record, "top1")


def test_mc_cli_intervals_and_two_models_compare(questions, digits_cache, hf_cache, tmp_path,
                                                 capsys):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    assert main(["mc", "score", "--model", "test:tiny-clip", "--questions", str(questions),
                 "--cache-dir", str(digits_cache), "--json", str(a), "--ci", "0.8",
                 "--ci-resamples", "150", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    record = json.loads(a.read_text())
    assert record["ci"]["level"] == 0.8 and set(record["ci"]["metrics"]) == {"top1"}
    assert "80% percentile bootstrap intervals (150 resamples, seed 0)" in printed
    assert "over 120 questions" in printed
    assert main(["mc", "score", "--model", "test:tiny-hf-clip", "--questions", str(questions),
                 "--cache-dir", str(hf_cache), "--json", str(b), "--no-progress"]) == 0
    assert main(["compare", str(a), str(b), "--json", str(out)]) == 0
    (comparison,) = json.loads(out.read_text())
    left, right = read_per_item(record, "top1"), read_per_item(json.loads(b.read_text()), "top1")
    want = paired_bootstrap(left.values, right.values)
    assert comparison["task"] == "mc" and comparison["unit"] == "questions"
    assert (comparison["ci"]["low"], comparison["ci"]["high"]) == (want.low, want.high)
    assert comparison["mcnemar"]["pvalue"] == mcnemar(left.values, right.values).pvalue


def _question(dataset, sample_id, options, answer=0):
    return {"dataset": dataset, "split": "test", "sample_id": sample_id, "options": options,
            "answer_index": answer, "question_id": f"{dataset}/test/{sample_id}"}


def test_questions_of_several_datasets_are_strata_and_other_options_other_items():
    questions = [_question("b", "1", ["x", "y"]), _question("a", "1", ["x", "y"]),
                 _question("b", "2", ["y", "x"], 1), _question("a", "2", ["z", "x"])]
    correct = np.array([True, False, False, True])
    items = mc.question_items(questions, correct)
    assert items.strata == (("a", 2), ("b", 2))
    np.testing.assert_array_equal(items.values, [False, True, True, False])  # a's, then b's
    same = mc.question_items([questions[1], questions[3]], correct[[1, 3]])
    assert same.ids_sha256 == mc.question_items(
        [{**q, "prompt": "other wording"} for q in (questions[1], questions[3])],
        correct[[1, 3]]).ids_sha256
    changed = [questions[1], {**questions[3], "options": ["z", "y"]}]
    assert mc.question_items(changed, correct[[1, 3]]).ids_sha256 != same.ids_sha256
