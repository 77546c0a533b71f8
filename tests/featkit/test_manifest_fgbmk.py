"""``--dataset manifest`` reads every FG-BMK manifest as it is (issue 20, item 3): paths with
commas, multi-label lines, 9,691 classes without a classes.txt, splits stored as arrays that
give the same samples as the base reader's lists."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from featkit.datasets import open_dataset
from featkit.datasets.base import Sample, carve_val
from featkit.datasets.generic import MULTI_LABEL_KEY, ManifestSamples
from featkit.testing.datasets import make_manifest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fgbmk" / "manifests"
#: dataset -> (train.csv rows, test.csv rows, classes, multi-label rows in test)
FGBMK = {
    "aircraft": (3334, 3333, 100, 0), "cub": (5994, 5794, 200, 0),
    "deepfashion": (14000, 4000, 50, 0), "flowers102": (1020, 6149, 102, 0),
    "food101": (75750, 25250, 101, 0), "products10k": (141931, 55376, 9691, 0),
    "skincon": (3445, 421, 48, 415), "stanfordcar": (8144, 8041, 196, 0),
    "stanforddog": (12000, 8580, 120, 0), "wine": (3916, 600, 11, 82),
}


def _linked(name: str, root: Path) -> Path:
    """The shared manifest files linked under ``root``, with only each split's first image
    present (the reader checks that one)."""
    folder = root / name
    folder.mkdir(parents=True)
    for f in (SHARED / name).iterdir():
        os.symlink(f, folder / f.name)
    for split in ("train", "test"):
        with (SHARED / name / f"{split}.csv").open() as handle:
            first = folder / handle.readline().rsplit(",", 1)[0]
        first.parent.mkdir(parents=True, exist_ok=True)
        first.write_bytes(b"")
    return folder


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/fgbmk is absent")
@pytest.mark.parametrize("name", sorted(FGBMK))
def test_every_fgbmk_manifest_reads_as_it_is(name, tmp_path):
    train_rows, test_rows, classes, multi = FGBMK[name]
    ds = open_dataset("manifest", _linked(name, tmp_path))
    train, val, test = (ds.samples(s) for s in ("train", "val", "test"))
    assert (len(train) + len(val), len(test), len(ds.class_names)) == (train_rows, test_rows,
                                                                         classes)
    assert sum(MULTI_LABEL_KEY in s.attributes for s in test) == multi
    assert max(s.label for s in test) < classes


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/fgbmk is absent")
def test_fgbmk_comma_paths_and_multi_label_lines(tmp_path):
    fashion = open_dataset("manifest", _linked("deepfashion", tmp_path)).samples("test")
    ids = {s.sample_id: s.label for s in fashion}
    assert ids["img/Take_Less,_Give_More_Tee/img_00000017.jpg"] == 17
    skin = open_dataset("manifest", _linked("skincon", tmp_path))
    rows = {s.sample_id: s for s in (*skin.samples("train"), *skin.samples("val"))}
    first = rows["fitzpatrick17k/952aa2d323c527a7da1bd4110b32303b.jpg"]
    assert first.label == 1 and first.attributes[MULTI_LABEL_KEY] == "1 10 12 29"
    assert skin.class_names[29] == (SHARED / "skincon" / "classes.txt").read_text(
        ).splitlines()[29]


def _write(root: Path, split: str, lines: list[str]) -> None:
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    for line in filter(str.strip, lines):
        path = root / line.strip().rsplit(",", 1)[0].strip('"')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_commas_quotes_and_multi_labels_in_generated_manifests(tmp_path):
    _write(tmp_path, "train", ["a,b/x.jpg,0", "a,b/y.jpg,1 2", "c.jpg,2", "d.jpg,0", "e.jpg,1",
                               "f.jpg,2 0"])
    _write(tmp_path, "test", ['"q,r.jpg",1', "s.jpg,0"])
    ds = open_dataset("manifest", tmp_path)
    samples = [*ds.samples("train"), *ds.samples("val")]
    by_id = {s.sample_id: s for s in samples}
    assert by_id["a,b/x.jpg"].label == 0 and by_id["a,b/y.jpg"].label == 1
    assert by_id["a,b/y.jpg"].attributes == {MULTI_LABEL_KEY: "1 2"}
    assert by_id["f.jpg"].attributes == {MULTI_LABEL_KEY: "2 0"}
    assert ds.class_names == ["0", "1", "2"]
    assert [s.sample_id for s in ds.samples("test")] == ["q,r.jpg", "s.jpg"]
    assert by_id["a,b/x.jpg"].locator == str(tmp_path / "a,b/x.jpg")


def test_array_splits_give_the_base_readers_samples(tmp_path):
    """The carve and the samples equal what the base reader computes over lists of Samples."""
    g = make_manifest(tmp_path, n_classes=5, train_per_class=9, test_per_class=2, image_size=8)
    ds = open_dataset("manifest", g.root)
    train, val = ds.samples("train"), ds.samples("val")
    assert isinstance(train, ManifestSamples)
    official = [Sample(i, y, str(g.root / i)) for i, y in g.splits["train"]]
    want_train, want_val = carve_val(official)
    assert list(train) == want_train and list(val) == want_val
    assert train[-1] == want_train[-1] and train[1:3] == want_train[1:3]
    assert train + val == want_train + want_val


def test_an_image_listed_twice_is_the_base_readers_error(tmp_path):
    _write(tmp_path, "train", ["a.jpg,0", "b.jpg,1", "./a.jpg,0"])
    _write(tmp_path, "test", ["c.jpg,0"])
    with pytest.raises(Exception, match=r"a\.jpg is listed twice in the train split"):
        open_dataset("manifest", tmp_path).samples("train")
    _write(tmp_path, "train", ["a.jpg,0", "b.jpg,1"])
    _write(tmp_path, "test", ["b.jpg,1"])
    with pytest.raises(Exception, match=r"b\.jpg is in both the train and the test split"):
        open_dataset("manifest", tmp_path).samples("train")


def test_labels_are_arrays_not_objects(tmp_path):
    g = make_manifest(tmp_path, n_classes=2, train_per_class=3, image_size=8)
    samples = open_dataset("manifest", g.root).samples("test")
    assert samples.labels.dtype == np.int64 and samples.blob.dtype == np.uint8


def test_block_parsing_equals_line_by_line(tmp_path, monkeypatch):
    """The array parse of plain blocks gives exactly what the line-by-line rules give, for any
    block boundary, blank lines and CRLF endings included."""
    from featkit.datasets import generic

    rng = np.random.default_rng(0)
    lines = []
    for i in range(400):
        sep = "," if i % 7 == 0 else "_"
        lines.append(f"d{i % 13}/im{sep}g{i}.jpg,{rng.integers(0, 12)}" + ("\r" if i % 5 == 0
                                                                          else ""))
        if i % 50 == 0:
            lines.append("")
    _write(tmp_path, "train", lines)
    _write(tmp_path, "test", ["t0.jpg,3", "t1.jpg,11"])

    def read():
        ds = open_dataset("manifest", tmp_path)
        return [(s.sample_id, s.label) for split in ("train", "val", "test")
                for s in ds.samples(split)]

    blocks = read()
    monkeypatch.setattr(generic, "BLOCK_BYTES", 97)
    assert read() == blocks
    monkeypatch.setattr(generic._ManifestReader, "_block", lambda self, lines, lineno: None)
    assert read() == blocks
    assert len(blocks) == 402 and ("d0/im,g0.jpg", blocks[0][1]) == blocks[0]
