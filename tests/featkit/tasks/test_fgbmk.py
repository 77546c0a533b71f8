"""The FG-BMK tasks: probes.fgbmk on the cached splits, records that state their departures."""

from __future__ import annotations

import numpy as np
import pytest

import featkit
from featkit.errors import FeatkitError
from featkit.tasks.fgbmk import linear, retrieval
from featkit.tasks.loading import FeatureSource
from featkit.tasks.settings import settings_from
from probes import fgbmk

SMALL = {"iterations": 20, "batch_size": 32, "learning_rates": (1e-2, 5e-2)}


def test_linear_task_is_probes_fgbmk_on_train_plus_val(digits_cache):
    source = FeatureSource("test:tiny-clip", cache_dir=digits_cache)
    settings = settings_from(linear.Settings, {**SMALL, "earlier_blocks": ("aligned",)},
                             task="fgbmk_linear")
    record = linear.run(source, "digits", settings, progress=False)
    load = lambda split, kind: featkit.load("test:tiny-clip", "digits", split, kind,  # noqa: E731
                                            cache_dir=digits_cache)
    train = [np.concatenate([load(s, k).features for s in ("train", "val")])
             for k in ("aligned", "visual")]
    labels = np.concatenate([load(s, "visual").labels for s in ("train", "val")])
    direct = fgbmk.fgbmk_linear(train, labels, [load("test", "aligned").features,
                                                load("test", "visual").features],
                                load("test", "visual").labels, num_classes=10, device="cpu",
                                **SMALL)
    assert record["task"] == "fgbmk_linear" and record["features"] == "visual"
    assert record["metrics"] == pytest.approx(direct.metrics)
    assert record["selected_head"] == direct.selected
    assert len(record["heads"]) == 4 and sum(h["selected"] for h in record["heads"]) == 1
    assert record["counts"] == {"train": 1347, "test": 450, "heads": 4}
    assert record["settings"]["protocol"] == "fgbmk"
    assert record["settings"]["optimizer"] == "adam"
    assert record["settings"]["features"] == {"last_block": "visual",
                                              "earlier_blocks": ["aligned"], "patch_mean": None}
    assert any("selected on the test split" in d for d in record["departures"])
    assert record["compare_with"]["task"] == "linear_probe"
    assert any("24 heads; this one has 4" in w for w in record["warnings"])


def test_retrieval_task_records_what_its_map_is(digits_cache):
    source = FeatureSource("pixels:8", cache_dir=digits_cache)
    settings = retrieval.Settings(embed_dim=16, gallery_size=300, **SMALL)
    record = retrieval.run(source, "digits", settings, progress=False)
    assert record["task"] == "fgbmk_retrieval"
    assert set(record["metrics"]) == {"mAP", "recall@1", "recall@10"}
    assert 0 < record["metrics"]["mAP"] <= 1
    assert record["counts"]["gallery"] == 300 and record["counts"]["test"] == 450
    assert record["settings"]["optimizer"] == "sgd" and record["settings"]["momentum"] == 0.9
    assert any("'mAP' is not retrieval mAP" in d for d in record["departures"])
    assert record["compare_with"] == retrieval.COMPARE_WITH


@pytest.mark.parametrize("cls, values, message", [
    (linear.Settings, {"iterations": 0}, "iterations must be a positive integer"),
    (linear.Settings, {"optimizer": "lbfgs"}, "optimizer must be adam or sgd"),
    (linear.Settings, {"learning_rates": ()}, "names no value"),
    (retrieval.Settings, {"embed_dim": -1}, "embed_dim must be a positive integer"),
    (retrieval.Settings, {"gallery": 10}, "unknown setting 'gallery'"),
])
def test_bad_settings_are_one_line_errors(cls, values, message):
    with pytest.raises(FeatkitError, match=message):
        settings_from(cls, values, task="fgbmk")


def test_a_kind_named_twice_is_refused(digits_cache):
    source = FeatureSource("test:tiny-clip", cache_dir=digits_cache)
    with pytest.raises(FeatkitError, match="name a kind twice"):
        linear.run(source, "digits", linear.Settings(earlier_blocks=("visual",), **SMALL))
