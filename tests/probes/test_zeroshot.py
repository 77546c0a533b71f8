"""Zero-shot scoring: CLIP's template averaging, and metrics equal to scoring the full cosine
matrix with the shared classification scorer (ties included)."""

from __future__ import annotations

import numpy as np
import pytest

from probes.classification import score_classification
from probes.zeroshot import (
    class_embeddings,
    true_class_ranks,
    zeroshot_classify,
    zeroshot_scores,
)


def _cosine(x, w):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ w.T


def test_template_averaging_is_the_clip_formula():
    """CLIP: zeroshot_weights[c] = normalize(mean_t(normalize(encode_text(template_t(c)))))."""
    rng = np.random.default_rng(0)
    prompts = rng.normal(size=(4, 3, 8)).astype(np.float32) * rng.uniform(0.5, 5, (4, 3, 1))
    expected = []
    for per_class in prompts:
        normed = [p / np.linalg.norm(p) for p in per_class]
        mean = np.mean(normed, axis=0)
        expected.append(mean / np.linalg.norm(mean))
    np.testing.assert_allclose(class_embeddings(prompts), np.array(expected), atol=1e-6)
    with pytest.raises(ValueError, match="classes, templates, dim"):
        class_embeddings(prompts[0])


def test_ranks_follow_the_stable_tie_rule():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(300, 9)).astype(np.float32)  # many exact ties
    labels = rng.integers(0, 9, size=300)
    order = np.argsort(-scores, axis=1, kind="stable")
    expected = np.argmax(order == labels[:, None], axis=1)
    np.testing.assert_array_equal(true_class_ranks(scores, labels), expected)


@pytest.mark.parametrize("ties", [False, True])
def test_metrics_equal_the_full_score_matrix(ties):
    rng = np.random.default_rng(2)
    classes = class_embeddings(rng.normal(size=(30, 2, 16)))
    if ties:
        classes[7] = classes[3]  # two classes with one embedding (CLIP's two 'missile's)
    labels = rng.integers(0, 30, size=500)
    features = (classes[labels] * 2 + rng.normal(size=(500, 16)) * 1.5).astype(np.float32)
    got = zeroshot_classify(features, labels, classes, [f"c{i}" for i in range(30)])
    want = score_classification(_cosine(features, classes), labels,
                                [f"c{i}" for i in range(30)])
    assert (got.top1, got.top5, got.mean_per_class) == pytest.approx(
        (want.top1, want.top5, want.mean_per_class), abs=1e-12)
    assert got.per_class == pytest.approx(want.per_class)
    assert 0.05 < got.top1 < 0.95  # the problem is neither trivial nor hopeless


def test_groups_score_a_merged_class_by_its_best_member():
    rng = np.random.default_rng(3)
    classes = class_embeddings(rng.normal(size=(6, 1, 8)))
    groups = np.array([0, 1, 0, 2, 1, 3])  # e.g. a label map: class 2 -> 0, class 4 -> 1
    features = rng.normal(size=(200, 8)).astype(np.float32)
    labels = groups[rng.integers(0, 6, size=200)]
    cos = _cosine(features, classes)
    merged = np.stack([cos[:, groups == g].max(axis=1) for g in range(4)], axis=1)
    got = zeroshot_classify(features, labels, classes, list("abcd"), groups=groups)
    want = score_classification(merged, labels, list("abcd"))
    assert (got.top1, got.top5, got.mean_per_class) == pytest.approx(
        (want.top1, want.top5, want.mean_per_class))
    scores = zeroshot_scores(features, classes, groups=groups)
    np.testing.assert_allclose(scores / np.linalg.norm(features, axis=1, keepdims=True), merged,
                               atol=1e-5)


def test_bad_inputs_are_refused():
    classes = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="same width"):
        zeroshot_classify(np.zeros((2, 4), np.float32), np.zeros(2, int), classes)
    bad = np.ones((2, 3), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(Exception, match="NaN"):
        zeroshot_classify(bad, np.zeros(2, int), classes)
