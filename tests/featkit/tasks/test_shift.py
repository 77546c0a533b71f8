"""The shift task on generated ImageNet trees: one classifier on ImageNet, each shifted set
scored over its classes and paired with ImageNet val restricted to the same classes."""

from __future__ import annotations

import numpy as np
import pytest

import featkit
from featkit.errors import FeatkitError
from featkit.tasks import FeatureSource, linear, shift
from featkit.tasks.intervals import read_per_item
from featkit.testing import imagenet as gen

SHIFTED = ("imagenetv2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
MAKERS = {"imagenetv2": gen.make_imagenetv2, "imagenet-r": gen.make_imagenet_r,
          "imagenet-sketch": gen.make_imagenet_sketch, "objectnet": gen.make_objectnet,
          "imagenet-a": gen.make_imagenet_a}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift")
    cache = root / "cache"
    made = {"imagenet": gen.make_imagenet(root / "imagenet", train_per_class=8, test_per_class=3)}
    options = dict(cache_dir=cache, progress=False, num_workers=0)
    featkit.extract("pixels:8", "imagenet", data_root=made["imagenet"].root, **options)
    for name, make in MAKERS.items():
        made[name] = make(root / name)
        featkit.extract("pixels:8", name, data_root=made[name].root, splits=("test",), **options)
    source = FeatureSource("pixels:8", cache_dir=cache)
    settings = shift.Settings(linear_settings=linear.Settings(c_grid=(1.0, 10.0, 100.0)))
    outcome = shift.run(source, SHIFTED, settings, progress=False)
    return {"root": root, "cache": cache, "made": made, "source": source, "outcome": outcome}


def test_one_record_per_shifted_set(workspace):
    records = workspace["outcome"].records
    assert [r["dataset"] for r in records] == list(SHIFTED)
    for record in records:
        assert record["task"] == "shift" and record["reference"] == "imagenet"
        m = record["metrics"]
        assert m["drop"] == pytest.approx(m["reference_top1"] - m["top1"])
        assert record["settings"]["classifier"] == "linear"
    by_name = {r["dataset"]: r for r in records}
    assert by_name["imagenet-r"]["settings"]["classes"] == 200
    assert by_name["imagenet-r"]["settings"]["reference_classes"] == 200
    # the ImageNet tree has 4 classes: the probe learns those, and says so
    assert by_name["imagenet-r"]["settings"]["scored_classes"] == 4
    assert any("196 of the 200 imagenet classes" in w for w in by_name["imagenet-r"]["warnings"])
    assert by_name["imagenetv2"]["settings"]["masked"] is False
    assert by_name["objectnet"]["class_mapping"] == {
        "fish_tank": ["n01443537", "n01484850"], "stingray_toy": ["n01498041"]}


def _hand(probe, features, labels, groups):
    """Masked accuracy written out: the best of the covered classes the probe knows (``groups``
    as probe rows), correct if it is one of the item's class's."""
    columns = sorted({c for g in groups for c in g})
    logits = probe.predict_scores(features)[:, columns]
    best = [columns[i] for i in np.argmax(logits, axis=1)]
    return np.array([b in groups[y] for b, y in zip(best, labels)])


def test_masked_and_reference_accuracy_equal_a_hand_computation(workspace):
    probe = workspace["outcome"].probe
    source = workspace["source"]
    reference = source.load("imagenet", "test")
    row = {w: i for i, w in enumerate(probe.class_names)}  # the 4 wnids the probe learnt
    ref_labels = np.array([row[reference.class_names[y]] for y in reference.labels])
    for record in workspace["outcome"].records:
        name = record["dataset"]
        fs = source.load(name, "test")
        mapping = record.get("class_mapping") or {c: [c] for c in fs.class_names}
        groups = [[row[w] for w in mapping[c] if w in row] for c in fs.class_names]
        correct = _hand(probe, fs.features, fs.labels, groups)
        assert record["metrics"]["top1"] == pytest.approx(correct.mean())
        np.testing.assert_array_equal(read_per_item(record, "top1").values, correct)
        # the reference: ImageNet val items of the covered classes only, exact class wanted
        columns = sorted({c for g in groups for c in g})
        rows = np.flatnonzero(np.isin(ref_labels, columns))
        logits = probe.predict_scores(reference.features[rows])[:, columns]
        want = np.array(columns)[np.argmax(logits, axis=1)] == ref_labels[rows]
        assert record["counts"]["reference"] == len(rows)
        assert record["metrics"]["reference_top1"] == pytest.approx(want.mean())


def test_reference_accuracy_uses_only_the_shared_classes(workspace):
    by_name = {r["dataset"]: r for r in workspace["outcome"].records}
    # 4 ImageNet classes x 3 val images; ImageNet-A's tree covers 2 of them, the others all 4
    assert by_name["imagenet-a"]["counts"]["reference"] == 6
    assert by_name["imagenet-r"]["counts"]["reference"] == 12
    assert by_name["objectnet"]["counts"]["reference"] == 9  # fish tank: 2 classes, stingray: 1


def test_knn_and_ci(workspace):
    from featkit.tasks import knn

    settings = shift.Settings(classifier="knn", knn_settings=knn.Settings(ks=(3,)),
                              ci=shift.Interval(0.9, 200, 1))
    records = shift.run(workspace["source"], ["imagenet-r", "imagenet-a"], settings,
                        progress=False).records
    for record in records:
        ci = record["ci"]
        assert (ci["level"], ci["resamples"], ci["seed"]) == (0.9, 200, 1)
        for metric in ("top1", "reference_top1"):
            row = ci["metrics"][metric]
            assert row["low"] <= record["metrics"][metric] <= row["high"]
        assert record["settings"]["k"] == 3


def test_a_saved_probe_is_reused_and_checked(workspace, tmp_path):
    path = workspace["outcome"].probe.save(tmp_path / "probe.npz")
    settings = shift.Settings(probe=str(path))
    again = shift.run(workspace["source"], ["imagenet-r"], settings, progress=False).records[0]
    first = workspace["outcome"].records[1]
    assert again["metrics"] == first["metrics"]
    assert again["settings"]["probe"]["source"] == str(path)
    with pytest.raises(FeatkitError, match="needs --classifier linear"):
        shift.Settings(classifier="knn", probe=str(path))


def test_a_set_with_other_classes_is_refused(workspace):
    from featkit.testing.datasets import make_imagefolder

    folder = make_imagefolder(workspace["root"] / "folder")
    featkit.extract("pixels:8", "imagefolder", data_root=folder.root, splits=("test",),
                    cache_dir=workspace["cache"], progress=False, num_workers=0)
    path = workspace["outcome"].probe.save(workspace["root"] / "saved.npz")
    with pytest.raises(FeatkitError, match="not imagenet classes"):
        shift.run(workspace["source"], ["imagefolder"], shift.Settings(probe=str(path)),
                  progress=False)


def test_zeroshot_embeds_each_class_name_in_every_template(workspace, monkeypatch):
    """The text side is faked: each prompt embeds as the mean train feature of the class it
    names (zero for classes without images), so zero-shot should work like a class-mean probe.
    The class embeddings go through the text cache as the zeroshot task makes them."""
    import featkit.text_cache
    from extractors.text_towers import TextTower
    from featkit.datasets.imagenet import readable_names

    source = workspace["source"]
    train = source.load("imagenet", "train")
    names = readable_names(train.class_names)
    means = {names[c]: train.features[train.labels == c].mean(axis=0)
             for c in np.unique(train.labels)}
    seen = []

    class FakeTower(TextTower):
        model, image_kind, tokenizer = source.model, source.features, {"fake": "class means"}
        weights_identity = train.meta["weights"]

        def encode(self, texts, *, batch_size=None, progress=False):
            seen.extend(texts)
            dim = train.features.shape[1]
            rows = np.stack([means.get(t.split("|")[1], np.ones(dim)) for t in texts])
            return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    class NarrowTower(FakeTower):
        tokenizer = {"fake": "3-d"}

        def encode(self, texts, *, batch_size=None, progress=False):
            return np.full((len(texts), 3), 3 ** -0.5, np.float32)

    monkeypatch.setattr(featkit.text_cache, "lazy_tower", lambda text_source: FakeTower)
    settings = shift.Settings(classifier="zeroshot", templates=("a |{}|.", "the |{}|"))
    (record,) = shift.run(source, ["imagenet-r"], settings, progress=False).records
    assert len(seen) == 2 * 1000 and seen[:2] == ["a |tench|.", "the |tench|"]
    assert record["settings"]["templates"] == ["a |{}|.", "the |{}|"]
    assert record["metrics"]["reference_top1"] > 0.5
    monkeypatch.setattr(featkit.text_cache, "lazy_tower", lambda text_source: NarrowTower)
    narrow = shift.Settings(classifier="zeroshot", templates=("an |{}|.",))  # not yet cached
    with pytest.raises(FeatkitError, match="text embeddings are 3-d"):
        shift.run(source, ["imagenet-r"], narrow, progress=False)
    with pytest.raises(FeatkitError, match="needs a"):
        shift.Settings(classifier="zeroshot", templates=("no slot",))
