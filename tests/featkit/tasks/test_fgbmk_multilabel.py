"""Multi-label manifests (SkinCon's ``path,1 10 12 29``): the multi-label probe's macro-AUROC
and mAP over classes, FG-BMK's retrieval over the label sets, and its linear protocol refusing
them (FG-BMK's code reads one label per image)."""

from __future__ import annotations

import numpy as np
import pytest

import featkit
from featkit.errors import FeatkitError
from featkit.tasks.fgbmk import linear, multilabel, retrieval
from featkit.tasks.loading import FeatureSource
from featkit.testing.datasets import make_manifest
from probes.multilabel import macro_auroc


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A 4-class manifest whose even rows list a second label, extracted with pixels:8."""
    root = tmp_path_factory.mktemp("multi")
    g = make_manifest(root / "data", n_classes=4, train_per_class=10, test_per_class=4,
                      image_size=8)
    for split in ("train", "test"):
        path = g.root / f"{split}.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join(
            f"{line} {(int(line.rsplit(',', 1)[1]) + 1) % 4}" if i % 2 == 0 else line
            for i, line in enumerate(lines)) + "\n")
    cache = root / "cache"
    featkit.extract("pixels:8", "manifest", data_root=g.root, cache_dir=cache, progress=False,
                    num_workers=0)
    return FeatureSource("pixels:8", cache_dir=cache), g


def test_the_multilabel_probe_scores_every_class(multi):
    source, g = multi
    record = multilabel.run(source, "manifest", multilabel.Settings(l2_grid=(1e-2, 1e-4)),
                            progress=False)
    assert record["task"] == "multilabel_probe"
    assert set(record["metrics"]) == {"macro_auroc", "map", "mean_group_top1"}
    assert 0.5 < record["metrics"]["macro_auroc"] <= 1 and 0 < record["metrics"]["map"] <= 1
    assert [row["attribute"] for row in record["per_class"]] == g.class_names
    assert record["multi_label_rows"]["test"] == 8  # every other test line has two labels
    assert record["counts"]["test"] == 16


def test_fgbmk_retrieval_ranks_against_the_label_sets(multi):
    source, _ = multi
    record = retrieval.run(source, "manifest", retrieval.Settings(
        iterations=10, batch_size=8, learning_rates=(0.01,), embed_dim=8), progress=False)
    assert 0 < record["metrics"]["mAP"] <= 1
    assert record["counts"]["test"] == 16


def test_fgbmk_linear_refuses_multi_label_data(multi):
    source, _ = multi
    with pytest.raises(FeatkitError, match="one integer label per image"):
        linear.run(source, "manifest", linear.Settings(iterations=2), progress=False)


def test_single_label_data_is_refused_by_the_multilabel_probe(digits_cache):
    with pytest.raises(FeatkitError, match="lists one label per image"):
        multilabel.run(FeatureSource("pixels:8", cache_dir=digits_cache), "digits",
                       progress=False)


def test_macro_auroc_is_over_classes():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)
    scores = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, -1.0]])
    assert macro_auroc(scores, targets) == 1.0
