"""probes.binary and probes.pairs: ROC-AUC and AP equal scikit-learn's (ties included), the
val threshold maximises accuracy, TAR @ FAR counts as defined, mined pairs are what they say."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from featkit.errors import FeatkitError
from probes.binary import accuracy_at, average_precision, best_threshold, roc_auc, tar_at_far
from probes.pairs import cosine_scores, mine_pairs, pair_verification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_ap_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    same = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + same, 1)  # rounding makes many ties
    assert roc_auc(scores, same) == pytest.approx(roc_auc_score(same, scores), abs=1e-12)
    assert average_precision(scores, same) == pytest.approx(
        average_precision_score(same, scores), abs=1e-12)


def test_pair_roc_auc_of_cosine_scores_equals_sklearn():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same = rng.random(200) < 0.5
    b[same] = a[same] + 0.8 * rng.normal(size=(same.sum(), 16))
    scores = cosine_scores(a, b)
    expected = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    result = pair_verification(scores[:100], same[:100], scores[100:], same[100:], far=0.05)
    assert result.roc_auc == pytest.approx(roc_auc_score(same[100:], scores[100:]))


def test_best_threshold_is_the_brute_force_best():
    rng = np.random.default_rng(4)
    same = rng.random(80) < 0.4
    scores = np.round(rng.normal(size=80) + same, 1)
    threshold, accuracy = best_threshold(scores, same)
    values = np.unique(scores)
    candidates = np.r_[values[0] - 1, (values[:-1] + values[1:]) / 2, values[-1] + 1]
    brute = [accuracy_at(scores, same, t) for t in candidates]
    assert accuracy == pytest.approx(max(brute))
    assert threshold == candidates[int(np.argmax(brute))]


def test_tar_at_far_counts():
    negatives = np.arange(1000, dtype=float)  # scores 0 .. 999
    positives = np.array([998.5, 997.0, 2000.0, 10.0])
    scores = np.r_[negatives, positives]
    same = np.r_[np.zeros(1000, bool), np.ones(4, bool)]
    tar, threshold, achieved = tar_at_far(scores, same, 1e-3)
    assert threshold == 998.0  # one negative (999) may score above
    assert achieved == pytest.approx(1e-3)
    assert tar == pytest.approx(2 / 4)
    result = pair_verification(scores, same, scores[990:], same[990:])
    assert any("cannot resolve FAR" in w for w in result.warnings)


def test_mined_pairs_are_same_class_positives_and_hardest_negatives():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 5)
    features = rng.normal(size=(20, 8))
    pairs = mine_pairs(labels, features, per_image=1, seed=0)
    pos = pairs.same
    assert (labels[pairs.first[pos]] == labels[pairs.second[pos]]).all()
    assert (labels[pairs.first[~pos]] != labels[pairs.second[~pos]]).all()
    assert (pairs.first < pairs.second).all()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    negatives = set(zip(pairs.first[~pos].tolist(), pairs.second[~pos].tolist()))
    for i in range(20):
        others = np.flatnonzero(labels != labels[i])
        j = int(others[np.argmax(similarity[i, others])])
        assert (min(i, j), max(i, j)) in negatives
    again = mine_pairs(labels, features, per_image=1, seed=0)
    np.testing.assert_array_equal(again.first, pairs.first)
    with pytest.raises(FeatkitError, match="at least 1"):
        mine_pairs(labels, features, per_image=0)


def test_verification_needs_both_kinds():
    with pytest.raises(FeatkitError, match="val pairs need both"):
        pair_verification(np.ones(3), np.ones(3, bool), np.ones(3), np.array([1, 0, 1], bool))
