"""probes.multilabel: macro-AUROC and mAP equal scikit-learn's; the per-group probe learns
learnable attributes, chooses its L2 strength on val, and per-group top-1 counts by hand; the
statistics recomputed on resamples average over the attributes and groups defined on the test
set, never over a resample's own."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from featkit.errors import FeatkitError
from probes.bootstrap import resample_statistics
from probes.multilabel import (
    evaluate_multilabel_probe,
    fit_multilabel_probe,
    group_top1,
    macro_auroc,
    mean_average_precision,
    multilabel_statistics,
)


def test_macro_auroc_and_map_equal_sklearn():
    rng = np.random.default_rng(0)
    targets = rng.random((200, 6)) < 0.3
    targets[:, 5] = False  # no positive: left out, as sklearn cannot score it
    scores = np.round(rng.normal(size=(200, 6)) + targets, 1)
    keep = [0, 1, 2, 3, 4]
    assert macro_auroc(scores, targets) == pytest.approx(
        roc_auc_score(targets[:, keep], scores[:, keep], average="macro"))
    assert mean_average_precision(scores, targets) == pytest.approx(
        average_precision_score(targets[:, keep], scores[:, keep], average="macro"))
    mask = rng.random((200, 6)) < 0.8
    by_hand = np.mean([roc_auc_score(targets[mask[:, a], a], scores[mask[:, a], a])
                       for a in keep])
    assert macro_auroc(scores, targets, mask) == pytest.approx(by_hand)


def test_group_top1_by_hand():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.3], [0.1, 0.2, 0.3], [0.5, 0.4, 0.0]])
    targets = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0]], dtype=bool)
    accuracy, images = group_top1(scores, targets, np.array([0, 1, 2]))
    assert images == 3  # the third image shows no value of the group
    assert accuracy == pytest.approx(1 / 3)  # only the first image's top value is shown


def test_probe_learns_attributes_and_chooses_per_group():
    rng = np.random.default_rng(1)
    n, d = 600, 12
    latent = rng.normal(size=(n, 4))
    features = np.c_[latent, rng.normal(size=(n, d - 4))].astype(np.float32)
    targets = np.c_[latent[:, :2] > 0, latent[:, 2:3] > 0.5, rng.random((n, 2)) < 0.5]
    groups = ["colour", "colour", "shape", "noise", "noise"]
    split = np.arange(n) % 3
    fit = fit_multilabel_probe(features[split == 0], targets[split == 0], features[split == 1],
                               targets[split == 1], groups=groups, l2_grid=(1e-1, 1e-3),
                               normalization="none")
    assert set(fit.chosen) == {"colour", "shape", "noise"}
    result = evaluate_multilabel_probe(fit, features[split == 2], targets[split == 2],
                                       [f"a{i}" for i in range(5)])
    assert result.auroc[:3].min() > 0.9 and result.auroc[3:].max() < 0.7
    metrics = result.metrics()
    assert metrics["macro_auroc"] == pytest.approx(np.mean(result.auroc))
    assert result.group_scores["colour"]["images"] > 0
    assert len(result.per_attribute_table()) == 5
    assert fit.sweep["colour"][0]["l2"] == 1e-1  # strongest first


def _rare_attribute_data():
    """200 images, 4 attributes in two groups; attribute 3 has a single labelled positive."""
    rng = np.random.default_rng(2)
    targets = rng.random((200, 4)) < 0.4
    targets[:, 3] = False
    targets[7, 3] = True
    mask = rng.random((200, 4)) < 0.9
    mask[7, 3] = True
    scores = rng.normal(size=(200, 4)) + targets
    return scores, targets, mask, ["a", "a", "b", "b"]


def test_statistics_on_the_test_set_are_the_reported_metrics():
    scores, targets, mask, groups = _rare_attribute_data()
    statistics = multilabel_statistics(groups, targets, mask)
    assert statistics["macro_auroc"](scores, targets, mask) == pytest.approx(
        macro_auroc(scores, targets, mask), abs=1e-15)
    assert statistics["map"](scores, targets, mask) == pytest.approx(
        mean_average_precision(scores, targets, mask), abs=1e-15)
    tops = [group_top1(scores, targets & mask, np.array(c))[0] for c in ([0, 1], [2, 3])]
    assert statistics["mean_group_top1"](scores, targets, mask) == pytest.approx(np.mean(tops))


def test_an_attribute_a_resample_lacks_makes_the_statistic_undefined_not_dropped():
    scores, targets, mask, groups = _rare_attribute_data()
    statistics = multilabel_statistics(groups, targets, mask)
    without = np.setdiff1d(np.arange(200), [7])  # a resample without the rare positive
    for name in ("macro_auroc", "map"):
        assert np.isnan(statistics[name](scores[without], targets[without], mask[without]))
    # the metrics of the resample alone would silently average over three attributes
    assert np.isfinite(macro_auroc(scores[without], targets[without], mask[without]))
    with pytest.raises(FeatkitError, match=r"^macro_auroc is undefined \(NaN\) on \d+ of 200 "):
        resample_statistics([scores, targets, mask], statistics, 200, seed=0)


def test_attributes_undefined_on_the_test_set_stay_out_of_every_resample():
    scores, targets, mask, groups = _rare_attribute_data()
    targets[7, 3] = False  # attribute 3: no positive at all, so not averaged over
    statistics = multilabel_statistics(groups, targets, mask)
    draws = resample_statistics([scores, targets, mask], statistics, 30, seed=1)
    rng = np.random.default_rng(1)
    for b in range(30):
        idx = rng.integers(0, 200, size=200)
        by_hand = np.mean([roc_auc_score(targets[idx][mask[idx, a], a],
                                         scores[idx][mask[idx, a], a]) for a in range(3)])
        assert draws["macro_auroc"][b] == pytest.approx(by_hand, abs=1e-12)


def test_a_group_no_resampled_image_shows_makes_mean_group_top1_undefined():
    scores, targets, mask, groups = _rare_attribute_data()
    statistics = multilabel_statistics(groups, targets, mask)
    shown_b = (targets & mask)[:, 2:].any(axis=1)
    rows = np.flatnonzero(~shown_b)
    assert rows.size and np.isnan(statistics["mean_group_top1"](scores[rows], targets[rows],
                                                                mask[rows]))
