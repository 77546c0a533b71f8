"""probes.multilabel: macro-AUROC and mAP equal scikit-learn's; the per-group probe learns
learnable attributes, chooses its L2 strength on val, and per-group top-1 counts by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from probes.multilabel import (
    evaluate_multilabel_probe,
    fit_multilabel_probe,
    group_top1,
    macro_auroc,
    mean_average_precision,
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
