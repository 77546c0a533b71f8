"""featkit mc build|score on the tiny models: well-formed questions with the promised
distractors, and scores that agree with the zero-shot task and the naive likelihood loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featkit.cli import main
from featkit.tasks import FeatureSource, mc, zeroshot


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip_questions(digits_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("mc") / "digits-clip.jsonl"
    code = main(["mc", "build", "--dataset", "digits", "--distractors", "clip:test:tiny-clip",
                 "--choices", "5", "--seed", "3", "--out", str(out), "--cache-dir",
                 str(digits_cache), "--no-progress"])
    assert code == 0
    return out


def test_questions_are_well_formed(clip_questions):
    rows = _rows(clip_questions)
    assert len(rows) == 450  # the digits test split
    for row in rows:
        options = row["options"]
        assert len(options) == 5 and len(set(options)) == 5  # no option repeated
        assert [row[letter] for letter in "ABCDE"] == options
        assert options[row["answer_index"]] == row["answer_text"] == str(row["label"])
        assert row["answer"] == "ABCDE"[row["answer_index"]]
        assert (tmp := clip_questions.parent / row["image_path"]).is_file(), tmp
        assert row["prompt"].splitlines()[1:6] == [f"{c}. {o}" for c, o in zip("ABCDE", options)]
    positions = np.bincount([row["answer_index"] for row in rows], minlength=5)
    assert positions.min() > 60  # the answer letter is shuffled


def test_clip_distractors_are_the_top_wrong_zero_shot_classes(clip_questions, digits_cache):
    """Against open_clip's own encode_image / encode_text of the same tiny weights."""
    import open_clip

    from extractors.tiny import TINY_CLIP_CONFIG
    from featkit.datasets import open_dataset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_CLIP_CONFIG).eval()
    ds = open_dataset("digits")
    samples = {s.sample_id: s for s in ds.samples("test")}
    fs = FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache).load("digits", "test")
    rows = _rows(clip_questions)
    with torch.no_grad():
        text = model.encode_text(open_clip.tokenize([f"a photo of a {d}." for d in range(10)],
                                                    context_length=16), normalize=True).numpy()
    index = {sid: i for i, sid in enumerate(fs.sample_ids)}
    scores = fs.features[[index[r["sample_id"]] for r in rows]] @ text.T
    for row, score in zip(rows, scores):
        label = samples[row["sample_id"]].label
        wrong = [c for c in np.argsort(-score, kind="stable") if c != label][:4]
        assert set(row["option_labels"]) - {label} == set(wrong)


def test_the_distractor_model_scores_its_zero_shot_top1(clip_questions, digits_cache):
    """Its own hardest negatives: the true class wins the 5-way question exactly when it
    wins among all classes."""
    scored = mc.score("test:tiny-clip", clip_questions, mc.ScoreSettings(),
                      cache_dir=digits_cache, progress=False)
    record, = zeroshot.run(FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache),
                           ["digits"], progress=False)
    assert scored.record["metrics"]["top1"] == pytest.approx(record["metrics"]["top1"])
    assert scored.record["task"] == "mc"
    assert scored.record["settings"]["method"] == "similarity"
    assert scored.record["metrics"]["chance"] == pytest.approx(0.2)


def test_a_vlm_is_scored_by_option_likelihood(clip_questions, tmp_path):
    from PIL import Image

    from extractors import load_extractor
    from extractors.option_scoring import OptionScorer

    subset = tmp_path / "few.jsonl"
    rows = _rows(clip_questions)[:6]
    for row in rows:
        row["image_path"] = str(clip_questions.parent / row["image_path"])
    mc.write_jsonl(rows, subset)
    out = tmp_path / "vlm.json"
    code = main(["mc", "score", "--model", "test:tiny-llava", "--questions", str(subset),
                 "--json", str(out), "--no-progress"])
    assert code == 0
    record = json.loads(out.read_text())
    predictions = _rows(tmp_path / "vlm.predictions.jsonl")
    assert record["settings"]["method"] == "likelihood" and len(predictions) == 6
    assert record["features"] == "likelihood:option"
    naive = OptionScorer(load_extractor("test:tiny-llava"))
    first = naive.score_naive(Image.open(rows[0]["image_path"]).convert("RGB"),
                              rows[0]["prompt"], rows[0]["options"])
    np.testing.assert_allclose(predictions[0]["scores"], first.logprob, atol=1e-5)
    assert predictions[0]["prediction"] == "ABCDE"[int(np.argmax(first.logprob))]


def test_random_hierarchy_and_visual_sources(digits_cache, tmp_path):
    parents = {str(d): ("even" if d % 2 == 0 else "odd") for d in range(10)}
    parents.update({"even": "digit", "odd": "digit"})
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps(parents))
    built = {}
    for name, source in [("random", "random"), ("tree", f"hierarchy:{tree}"),
                         ("visual", "visual:pixels:8")]:
        out = tmp_path / f"{name}.jsonl"
        assert main(["mc", "build", "--dataset", "digits", "--distractors", source, "--choices",
                     "4", "--limit", "30", "--out", str(out), "--cache-dir", str(digits_cache),
                     "--no-progress"]) == 0
        built[name] = _rows(out)
        assert len(built[name]) == 30
    for row in built["tree"]:  # three siblings of the same parity
        assert len({int(o) % 2 for o in row["options"]}) == 1
    again = tmp_path / "again.jsonl"
    main(["mc", "build", "--dataset", "digits", "--distractors", "random", "--choices", "4",
          "--limit", "30", "--out", str(again), "--no-progress"])
    def without_paths(rows):
        return [{k: v for k, v in row.items() if k != "image_path"} for row in rows]

    assert without_paths(_rows(again)) == without_paths(built["random"])  # the seed fixes it
    assert built["visual"][0]["distractors"] == "visual:pixels:8"


def test_run_builds_the_question_set_once_for_every_model(digits_cache):
    """The suite/API entry point: the set goes under the cache; the next model (a VLM, by
    likelihood) answers the same questions without rebuilding them."""
    from pathlib import Path

    settings = mc.Settings(distractors="clip:test:tiny-clip", limit=12)
    clip = mc.run(FeatureSource("test:tiny-clip", "aligned", cache_dir=digits_cache), "digits",
                  settings, progress=False)
    path = mc.questions_path("digits", settings, digits_cache)
    assert path.is_file() and path.parent == digits_cache / "_mc" / "digits"
    stamp = path.stat().st_mtime_ns
    vlm = mc.run(FeatureSource("test:tiny-llava", "last_token", cache_dir=digits_cache),
                 "digits", settings, progress=False)
    assert path.stat().st_mtime_ns == stamp
    assert vlm.record["settings"]["method"] == "likelihood"
    assert clip.record["counts"]["questions"] == vlm.record["counts"]["questions"] == 12
    assert Path(vlm.record["predictions_file"]).is_file()
