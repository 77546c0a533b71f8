"""Masked accuracy on a shifted set and the reference accuracy on the shared classes, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.shift import ClassSubset, reference_accuracy, shifted_accuracy

REFERENCE = ["a", "b", "c", "d", "e"]


def test_subset_from_names_and_columns():
    subset = ClassSubset.from_names(["d", "grp"], REFERENCE, {"grp": ["b", "a"]})
    assert subset.groups == ((3,), (0, 1))
    assert subset.columns.tolist() == [0, 1, 3]
    assert subset.column_groups().tolist() == [1, 1, 0]
    assert not subset.complete and ClassSubset.from_names(REFERENCE, REFERENCE).complete
    with pytest.raises(FeatkitError, match="not among"):
        ClassSubset.from_names(["zz"], REFERENCE)
    with pytest.raises(FeatkitError, match="two classes"):
        ClassSubset(((0, 1), (1,)), 5)


def test_a_class_the_classifier_cannot_score_is_never_right():
    subset = ClassSubset.from_names(["d", "grp"], REFERENCE, {"grp": ["b", "a"]}).restricted(
        np.array([0, 1]))  # the classifier knows a and b only
    assert subset.groups == ((), (0, 1)) and subset.columns.tolist() == [0, 1]
    result = shifted_accuracy(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), subset)
    assert result.correct.tolist() == [False, True]


def test_masked_accuracy_equals_a_hand_computation():
    # classes of the shifted set: "c" and a group {"a", "e"}; columns are a, c, e
    subset = ClassSubset.from_names(["c", "ae"], REFERENCE, {"ae": ["a", "e"]})
    full = np.array([  # logits over the 5 reference classes
        [0.1, 9.0, 0.5, 0.0, 0.2],  # b is masked out: best of a, c, e is c -> class 0
        [0.7, 0.0, 0.1, 5.0, 0.3],  # d masked: a wins -> group "ae" (class 1)
        [0.0, 0.0, 0.4, 0.0, 0.9],  # e -> class 1
        [0.3, 0.0, 0.3, 0.0, 0.3],  # three-way tie -> lowest id, a -> class 1
    ])
    labels = np.array([0, 0, 1, 0])
    result = shifted_accuracy(full[:, subset.columns], labels, subset)
    # by hand: item 0 right (c), item 1 wrong (ae, not c), item 2 right, item 3 wrong
    assert result.correct.tolist() == [True, False, True, False]
    assert result.top1 == 0.5
    assert result.predicted.tolist() == [2, 0, 4, 0]


def test_reference_accuracy_uses_only_the_shared_classes():
    subset = ClassSubset.from_names(["c", "ae"], REFERENCE, {"ae": ["a", "e"]})
    labels = np.array([0, 1, 2, 3, 4, 4])  # reference items of a, b, c, d, e, e
    full = np.array([
        [5.0, 0, 0, 0, 0],  # a: right
        [0, 5.0, 0, 0, 0],  # b: not a shared class, left out
        [0, 0, 1.0, 0, 2.0],  # c predicted e: wrong
        [0, 0, 0, 5.0, 0],  # d: left out
        [3.0, 0, 0, 0, 2.0],  # e predicted a: wrong (the exact class counts, not the group)
        [0, 0, 0, 9.0, 1.0],  # e: d masked out, e right
    ])
    rows = subset.reference_items(labels)
    assert rows.tolist() == [0, 2, 4, 5]
    result = reference_accuracy(full[rows][:, subset.columns], labels[rows], subset)
    assert result.correct.tolist() == [True, False, False, True]
    assert result.top1 == 0.5
    with pytest.raises(FeatkitError, match="does not cover"):
        reference_accuracy(full[:, subset.columns], labels, subset)
