"""The one stratified validation splitter: its documented rule, its seeded per-class stream, and
order independence when keys are given."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.splits import VAL_FRACTION, VAL_SEED, stratified_split


def test_split_is_stratified_seeded_and_a_partition():
    labels = np.array([0] * 20 + [1] * 10 + [2] * 1 + [3] * 2)
    train_idx, val_idx = stratified_split(labels, 0.1, seed=3)
    assert np.bincount(labels[val_idx], minlength=4).tolist() == [2, 1, 0, 1]
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
    assert train_idx.dtype == val_idx.dtype == np.int64
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)
    np.testing.assert_array_equal(stratified_split(labels, 0.1, seed=3)[1], val_idx)
    assert not np.array_equal(stratified_split(labels, 0.1, seed=4)[1], val_idx)


def test_each_class_draws_from_its_own_seeded_permutation():
    """Class c's val members are the first max(1, round(f n)) of default_rng([seed, c])'s
    permutation of its members in key order: the stream the datasets' val splits use."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)
    keys = [f"img{int(v):06d}" for v in rng.permutation(300)]
    _, val_idx = stratified_split(labels, 0.2, seed=5, keys=keys)
    expected = []
    for cls in range(7):
        members = sorted(np.flatnonzero(labels == cls), key=keys.__getitem__)
        take = max(1, round(0.2 * len(members)))
        expected += [members[i] for i in np.random.default_rng([5, cls]).permutation(
            len(members))[:take]]
    assert val_idx.tolist() == sorted(expected)


def test_keys_make_the_split_independent_of_input_order():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 120)
    keys = [f"s{i:03d}" for i in range(120)]
    _, val_idx = stratified_split(labels, keys=keys)
    perm = rng.permutation(120)
    _, val_perm = stratified_split(labels[perm], keys=[keys[i] for i in perm])
    assert sorted(keys[i] for i in val_idx) == sorted(keys[perm[i]] for i in val_perm)


def test_small_classes_are_never_emptied_and_defaults_are_named():
    labels = np.array([0, 0, 1, 2, 2, 2])
    _, val_idx = stratified_split(labels, 0.45)
    assert Counter(labels[val_idx].tolist()) == {0: 1, 2: 1}  # singleton class 1 stays in train
    assert (VAL_FRACTION, VAL_SEED) == (0.1, 0)
    assert stratified_split.__defaults__ == (VAL_FRACTION, VAL_SEED)
    train_idx, val_idx = stratified_split([])
    assert train_idx.size == val_idx.size == 0


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([0, 1], 0.0), {}, "fraction must lie in"),
        (([0, 1], 1.0), {}, "fraction must lie in"),
        (([0, 1], 0.1, -1), {}, "non-negative integer"),
        (([0, -1],), {}, "non-negative"),
        (([0.5, 1.0],), {}, "class ids"),
        (([0, 1],), {"keys": ["a"]}, "1 keys for 2 labels"),
    ],
)
def test_bad_input_is_a_one_line_error(args, kwargs, message):
    with pytest.raises(FeatkitError, match=message):
        stratified_split(*args, **kwargs)
