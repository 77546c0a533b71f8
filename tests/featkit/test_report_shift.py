"""``featkit report --shift`` on shift records: one point per record, intervals from per-item
scores (band, error bars, effective robustness with its interval), figure with both."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.reporting import collect_results, results_frame
from featkit.reporting.robustness import interval_summary, robustness_fit_for, with_intervals
from featkit.results import make_result
from featkit.stats import effective_robustness
from featkit.tasks.intervals import Interval, ItemScores, per_item_record

MODELS = {"m-a": (0.60, 0.30), "m-b": (0.70, 0.42), "m-c": (0.78, 0.50), "clip": (0.75, 0.62)}
REF_IDS = [f"val/{i}" for i in range(400)]
SHIFT_IDS = [f"r/{i}" for i in range(600)]


def _correct(p: float, n: int, seed: int) -> np.ndarray:
    """Exactly round(p * n) correct items, in a seeded order."""
    out = np.zeros(n, bool)
    out[: round(p * n)] = True
    return np.random.default_rng(seed).permutation(out)


def shift_record(model: str, ref: float, shifted: float, seed: int, items: bool = True):
    ref_c, shift_c = _correct(ref, 400, seed), _correct(shifted, 600, seed + 50)
    extra = {"reference": "imagenet", "counts": {"test": 600, "reference": 400}}
    if items:
        extra["per_item"] = per_item_record({
            "top1": ItemScores.of(shift_c, SHIFT_IDS),
            "reference_top1": ItemScores.of(ref_c, REF_IDS, unit="reference test items")})
    metrics = {"top1": shift_c.mean(), "reference_top1": ref_c.mean(),
               "drop": ref_c.mean() - shift_c.mean()}
    return make_result("shift", model=model, dataset="imagenet-r", features="visual",
                       metrics=metrics, settings={"classifier": "linear", "reference": "imagenet"},
                       provenance={}, extra=extra)


@pytest.fixture
def entries():
    records = [shift_record(m, r, s, i) for i, (m, (r, s)) in enumerate(MODELS.items())]
    return collect_results(records)[0]


def test_shift_records_are_the_points_of_the_fit(entries):
    fit, note = robustness_fit_for(entries, results_frame(entries), "imagenet", "imagenet-r",
                                   baseline=["m-a", "m-b", "m-c"])
    assert fit.task == "shift" and not note and fit.intervals is None
    points = fit.points.set_index("system")
    assert points.loc["clip", "ref"] == pytest.approx(0.75)
    assert points.loc["clip", "shifted"] == pytest.approx(0.62)
    want = effective_robustness([0.75], [0.62], fit.slope, fit.intercept)[0]
    assert points.loc["clip", "effective_robustness"] == pytest.approx(want)
    assert not points.loc["clip", "baseline"]


def test_intervals_from_per_item_scores(entries):
    fit, note = robustness_fit_for(entries, results_frame(entries), "imagenet", "imagenet-r",
                                   baseline=["m-a", "m-b", "m-c"],
                                   interval=Interval(0.95, 300, 0))
    assert not note
    iv = fit.intervals
    assert iv.resamples == 300 and iv.used == 300
    p = fit.points
    assert (p["er_low"] <= p["effective_robustness"]).all()
    assert (p["effective_robustness"] <= p["er_high"]).all()
    assert (p["ref_low"] <= p["ref"]).all() and (p["shifted"] <= p["shifted_high"]).all()
    clip = p.set_index("system").loc["clip"]
    assert clip["er_low"] > 0  # 62 % where the line predicts ~47 %: clearly above it
    assert iv.slope[0] <= fit.slope <= iv.slope[1]
    assert "slope [" in interval_summary(fit)


def test_records_without_per_item_scores_get_no_intervals(entries):
    old = [shift_record(m, r, s, i, items=False) for i, (m, (r, s)) in enumerate(MODELS.items())]
    entries = collect_results(old)[0]
    fit, note = robustness_fit_for(entries, results_frame(entries), "imagenet", "imagenet-r",
                                   interval=Interval())
    assert fit.intervals is None and note == ""  # older records: nothing to resample, silently
    assert "er_low" not in fit.points
    mixed = collect_results([*old[:3], shift_record("clip", 0.75, 0.62, 3)])[0]
    fit, note = robustness_fit_for(mixed, results_frame(mixed), "imagenet", "imagenet-r",
                                   interval=Interval())
    assert fit.intervals is None and "no per-item scores" in note


def test_the_figure_draws_the_band_and_error_bars(entries):
    from matplotlib.collections import PolyCollection

    from featkit import plots

    fit, _ = robustness_fit_for(entries, results_frame(entries), "imagenet", "imagenet-r",
                                baseline=["m-a", "m-b", "m-c"], interval=Interval(0.9, 100, 1))
    fig = plots.effective_robustness(fit)
    ax = fig.axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the band
    assert ax.containers, "error bars"
    labels = [t.get_text() for t in ax.texts]
    assert any(label.startswith("clip (+") and "[" in label for label in labels)
    again, _ = with_intervals(fit, entries, Interval(0.9, 100, 1))
    np.testing.assert_array_equal(again.intervals.slopes, fit.intervals.slopes)  # seeded
