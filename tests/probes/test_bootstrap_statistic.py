"""Bootstrap intervals of statistics recomputed on resampled items (AUC, worst group, ...)."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.errors import FeatkitError
from probes.binary import roc_auc, tar_at_far
from probes.bootstrap import (
    bootstrap_mean,
    bootstrap_statistic,
    bootstrap_statistics,
    resample_means,
    resample_statistics,
)
from probes.dg.groups import group_accuracy, mean_worst_group, worst_group_accuracy
from probes.pairs import pair_statistics, pair_verification


def _naive(arrays, statistic, resamples, seed, strata=None):
    """The module docstring's loop, written out."""
    n = len(arrays[0])
    if strata is None:
        members, rngs = [np.arange(n)], [np.random.default_rng(seed)]
    else:
        labels = sorted(set(strata.tolist()))
        members = [np.flatnonzero(strata == label) for label in labels]
        rngs = [np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(len(labels))]
    out = []
    for _ in range(resamples):
        idx = np.concatenate([m[rng.integers(0, len(m), size=len(m))]
                              for m, rng in zip(members, rngs)])
        out.append(statistic(*(a[idx] for a in arrays)))
    return np.asarray(out)


def _scored_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 3 == 0
    return rng.normal(size=n) + same, same


@pytest.mark.parametrize("stratified", [False, True])
def test_recomputed_statistic_matches_the_naive_loop(stratified):
    scores, same = _scored_pairs(90)
    strata = same if stratified else None
    got = resample_statistics([scores, same], {"auc": roc_auc}, 40, seed=7,
                              strata=strata)["auc"]
    want = _naive([scores, same], roc_auc, 40, 7, strata)
    np.testing.assert_array_equal(got, want)
    interval = bootstrap_statistic([scores, same], roc_auc, resamples=40, seed=7, strata=strata)
    assert (interval.low, interval.high) == pytest.approx(
        tuple(np.percentile(want, [2.5, 97.5])), abs=1e-15)
    assert interval.estimate == roc_auc(scores, same)
    assert interval.n == 90


def test_the_mean_as_a_statistic_draws_what_the_per_item_bootstrap_draws():
    values = np.random.default_rng(1).random(120)
    assert bootstrap_statistic([values], np.mean, resamples=60, seed=3) == pytest.approx(
        bootstrap_mean(values, resamples=60, seed=3))
    # consecutive strata with sorted labels: the same generators as resample_means' sizes
    labels = np.repeat([0, 1, 2], [30, 50, 40])
    got = resample_statistics([values], {"mean": np.mean}, 60, seed=3, strata=labels)["mean"]
    np.testing.assert_allclose(got, resample_means(values, 60, 3, strata=[30, 50, 40]),
                               rtol=0, atol=1e-12)


def test_stratified_resampling_keeps_every_stratum_size():
    groups = np.repeat([4, 1, 7], [3, 10, 6])[np.random.default_rng(0).permutation(19)]
    sizes = resample_statistics(
        [groups], {f"size{g}": (lambda gs, g=g: float(np.count_nonzero(gs == g)))
                   for g in (1, 4, 7)}, 30, seed=2, strata=groups)
    assert {k: set(v.tolist()) for k, v in sizes.items()} == {
        "size1": {10.0}, "size4": {3.0}, "size7": {6.0}}
    unstratified = resample_statistics([groups], {"size4": lambda gs: float((gs == 4).sum())},
                                       30, seed=2)["size4"]
    assert len(set(unstratified.tolist())) > 1  # without strata the sizes vary


def test_several_statistics_share_the_resamples():
    scores, same = _scored_pairs(60)
    both = bootstrap_statistics([scores, same], {"auc": roc_auc, "neg_auc": lambda s, y: -roc_auc(s, y)},
                                resamples=50, seed=5, strata=same)
    assert both["auc"].low == pytest.approx(-both["neg_auc"].high)
    assert both["auc"].high == pytest.approx(-both["neg_auc"].low)


def test_the_interval_covers_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (60, 600, 6000):
        scores, same = _scored_pairs(n, seed=n)
        interval = bootstrap_statistic([scores, same], roc_auc, resamples=200, seed=0,
                                       strata=same)
        assert interval.low <= interval.estimate <= interval.high
        widths.append(interval.high - interval.low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]


def test_undefined_statistics_and_bad_inputs_are_one_line_errors():
    scores, same = _scored_pairs(12)
    with pytest.raises(FeatkitError, match="undefined"):  # resamples without a positive
        bootstrap_statistic([scores, same], lambda s, y: roc_auc(s, y[:1].repeat(len(y))),
                            resamples=5)
    with pytest.raises(FeatkitError, match="one length"):
        bootstrap_statistic([scores, same[:5]], roc_auc, resamples=5)
    with pytest.raises(FeatkitError, match="one label per item"):
        bootstrap_statistic([scores, same], roc_auc, resamples=5, strata=same[:3])
    with pytest.raises(FeatkitError, match="no items"):
        bootstrap_statistic([np.zeros(0)], np.mean, resamples=5)


def test_pair_statistics_are_the_reported_metrics():
    val_scores, val_same = _scored_pairs(50, seed=1)
    scores, same = _scored_pairs(300, seed=2)
    result = pair_verification(val_scores, val_same, scores, same, far=0.05)
    statistics = pair_statistics(0.05)
    assert statistics["roc_auc"](scores, same) == result.roc_auc
    assert statistics["tar_at_far"](scores, same) == result.tar_at_far == tar_at_far(
        scores, same, 0.05)[0]
    assert result.test_correct.mean() == result.accuracy


def test_mean_worst_group_is_the_seed_mean_of_each_seeds_worst_group():
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 5, size=80)
    labels = rng.integers(0, 3, size=80)
    predictions = rng.integers(0, 3, size=(4, 80))  # seeds x items
    want = np.mean([worst_group_accuracy(group_accuracy(p, labels, groups, 6))
                    for p in predictions])
    assert mean_worst_group((predictions == labels).T, groups) == want
