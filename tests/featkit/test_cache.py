"""The cache: round trip, keys, crash-safe resume after SIGKILL, concurrent writers, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import extractors
import featkit
from featkit.cache import FEATURES_GROUP, parts_dir
from featkit.datasets import open_dataset
from featkit.errors import CacheError, FeatkitError
from featkit.extraction import extract

REPO = Path(__file__).resolve().parents[2]


def _file_content(path: Path) -> dict:
    """Everything in a cache file except its creation time."""
    with h5py.File(path, "r") as handle:
        content = {f"{FEATURES_GROUP}/{k}": v[()] for k, v in handle[FEATURES_GROUP].items()}
        for name in ("labels", "sample_ids", "class_names"):
            content[name] = handle[name][()]
        content["attrs"] = {k: v for k, v in handle.attrs.items() if k != "created_at"}
    return content


def assert_same_file(a: Path, b: Path) -> None:
    ca, cb = _file_content(a), _file_content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if key == "attrs":
            assert ca[key].keys() == cb[key].keys()
            for name in ca[key]:
                va, vb = ca[key][name], cb[key][name]
                if name == "key_fields" or name == "data_root":
                    continue
                assert np.array_equal(np.asarray(va), np.asarray(vb)), name
        else:
            assert ca[key].dtype == cb[key].dtype
            assert np.array_equal(ca[key], cb[key]), key  # bitwise for float32


def assert_same_bytes_but_created_at(a: Path, b: Path) -> None:
    """The README's claim: the file has the bytes of the other run's but for the value of its
    ``created_at`` attribute (a timestamp of fixed length)."""
    da, db = a.read_bytes(), b.read_bytes()
    assert len(da) == len(db)
    with h5py.File(a, "r") as handle:
        stamp = handle.attrs["created_at"]
    stamp = (stamp if isinstance(stamp, bytes) else stamp.encode())
    start = da.find(stamp)
    assert start >= 0 and da.find(stamp, start + 1) == -1
    differ = np.flatnonzero(np.frombuffer(da, np.uint8) != np.frombuffer(db, np.uint8))
    assert differ.size == 0 or (differ.min() >= start and differ.max() < start + len(stamp))


def test_round_trip_matches_direct_forward(digits_cache):
    fs = featkit.load("test:tiny-clip", "digits", "val", "visual", cache_dir=digits_cache)
    ds = open_dataset("digits")
    samples = ds.samples("val")
    assert fs.sample_ids == [s.sample_id for s in samples]
    assert np.array_equal(fs.labels, [s.label for s in samples])
    assert fs.class_names == [str(i) for i in range(10)]
    assert fs.features.dtype == np.float32 and fs.features.shape == (len(samples), 32)
    ex = extractors.load_extractor("test:tiny-clip")
    images = torch.stack([ex.transform(ds.load_image(s)) for s in samples[:7]])
    direct = ex(images, ["visual", "aligned"])
    np.testing.assert_allclose(fs.features[:7], direct["visual"].numpy(), atol=1e-5)
    aligned = featkit.load("test:tiny-clip", "digits", "val", "aligned", cache_dir=digits_cache)
    np.testing.assert_allclose(aligned.features[:7], direct["aligned"].numpy(), atol=1e-5)
    meta = fs.meta
    for field in ("featkit_version", "model", "weights", "preprocessing", "dataset", "split", "settings", "created_at"):
        assert field in meta
    assert meta["model"] == "test:tiny-clip" and meta["split"] == "val" and meta["complete"]
    assert meta["weights"] == "random:seed0"
    assert meta["preprocessing"]["size"] == 32


def test_second_run_is_a_cache_hit(digits_cache):
    summaries = extract("test:tiny-clip", "digits", cache_dir=digits_cache, progress=False)
    assert all(s.cached for s in summaries)


def _other_tiny_clip_weights(path: Path) -> Path:
    """A checkpoint of tiny-clip's architecture with other (seed 1) weights."""
    import copy

    import open_clip

    from extractors.tiny import TINY_CLIP_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = open_clip.CLIP(**copy.deepcopy(TINY_CLIP_CONFIG))
    torch.save(model.state_dict(), path)
    return path


def test_changed_weights_never_reuse_features(tmp_path):
    cache = tmp_path / "cache"
    base = extract("test:tiny-clip", "digits", splits=["val"], cache_dir=cache, progress=False)[0]
    weights = _other_tiny_clip_weights(tmp_path / "tiny.pt")
    changed = extract("test:tiny-clip", "digits", splits=["val"], weights=weights, cache_dir=cache, progress=False)[0]
    assert not changed.cached and changed.path != base.path
    newest = featkit.load("test:tiny-clip", "digits", "val", cache_dir=cache)
    assert newest.path == changed.path  # without --weights: the newest, with a note naming the other
    assert len(newest.notes) == 1 and "2 cache files match" in newest.notes[0]
    assert str(base.path) in newest.notes[0]
    mine = featkit.load("test:tiny-clip", "digits", "val", cache_dir=cache, weights=weights)
    assert mine.path == changed.path and mine.meta["weights"].startswith("sha256:")
    assert mine.notes == []
    assert not np.allclose(featkit.load_file(base.path, "visual").features, mine.features)


def test_weights_are_hashed_once_per_process(tmp_path, monkeypatch):
    """extract, then several loads with --weights (a probe command's pattern): one read."""
    from extractors import weights as w

    weights = _other_tiny_clip_weights(tmp_path / "tiny.pt")
    reads = []
    read = w._read_sha256
    monkeypatch.setattr(w, "_DIGESTS", {})
    monkeypatch.setattr(w, "_read_sha256", lambda path, *a, **k: reads.append(path) or read(path, *a, **k))
    cache = tmp_path / "cache"
    extract("test:tiny-clip", "digits", splits=["val", "test"], weights=weights, cache_dir=cache, progress=False)
    for split in ("val", "test", "val"):
        assert featkit.load("test:tiny-clip", "digits", split, cache_dir=cache, weights=weights).meta["weights"]
    assert reads == [weights.resolve()]


def test_changed_split_contents_change_the_key(tmp_path):
    root = tmp_path / "manifest"
    root.mkdir()
    from PIL import Image

    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / f"{i}.png")
    (root / "train.csv").write_text("".join(f"{i}.png,{i % 2}\n" for i in range(4)))
    (root / "test.csv").write_text("4.png,0\n5.png,1\n")
    first = extract("pixels:8", "manifest", data_root=root, splits=["test"], cache_dir=tmp_path / "c", progress=False)[0]
    (root / "test.csv").write_text("4.png,1\n5.png,0\n")  # relabelled
    second = extract("pixels:8", "manifest", data_root=root, splits=["test"], cache_dir=tmp_path / "c", progress=False)[0]
    assert not second.cached and second.path != first.path


def test_missing_kinds_are_added_to_the_file(tmp_path):
    first = extract("test:tiny-clip", "digits", splits=["val"], features=["visual"], cache_dir=tmp_path, progress=False)[0]
    assert set(first.dims) == {"visual"}
    second = extract("test:tiny-clip", "digits", splits=["val"], features=["aligned"], cache_dir=tmp_path, progress=False)[0]
    assert second.path == first.path and not second.cached
    assert set(featkit.load_file(second.path, "aligned").meta["kinds"]) == {"visual", "aligned"}


_SLOW_EXTRACT = """
import sys, time
import extractors
from featkit.extraction import extract
ex = extractors.load_extractor("pixels:8")
forward = ex.forward
def slow(images, kinds):
    time.sleep(0.03)
    return forward(images, kinds)
ex.forward = slow
s = extract("pixels:8", "digits", splits=["train"], cache_dir=sys.argv[1], shard_size=96,
            batch_size=32, progress=False, num_workers=0, extractor=ex)[0]
print(s.shards_done, s.shards_reused, s.cached)
"""


def _run_slow(cache: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _SLOW_EXTRACT, str(cache)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.rglob("shard-*.npz"))


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path):
    reference = extract("pixels:8", "digits", splits=["train"], cache_dir=tmp_path / "ref",
                        shard_size=96, batch_size=32, progress=False, num_workers=0)[0]
    cache = tmp_path / "killed"
    rng = random.Random(1234)
    for target in (1, 4, 9):  # kill after at least `target` shards exist, plus a random delay
        proc = _run_slow(cache)
        deadline = time.time() + 60
        while len(_shards(cache)) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = len(_shards(cache))
    assert 0 < before < 13, "the kills should land mid-extraction"
    assert not list(cache.rglob("*.h5")), "no final file before completion"
    proc = _run_slow(cache)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    done, reused, cached = out.split()
    assert int(reused) == before and int(done) == 13 - before  # at most the shard in progress is redone
    final = next(cache.rglob("train-*.h5"))
    assert not parts_dir(final).exists()
    assert_same_file(final, reference.path)
    assert_same_bytes_but_created_at(final, reference.path)


def test_two_concurrent_writers_on_one_key(tmp_path):
    cache = tmp_path / "cache"
    procs = [_run_slow(cache) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    cached_flags = sorted(o[0].split()[2] for o in outs)
    assert cached_flags == ["False", "True"]  # one computed, the other waited and reused it
    files = list(cache.rglob("*.h5"))
    assert len(files) == 1
    reference = extract("pixels:8", "digits", splits=["train"], cache_dir=tmp_path / "ref",
                        shard_size=96, batch_size=32, progress=False, num_workers=0)[0]
    assert_same_file(files[0], reference.path)
    assert_same_bytes_but_created_at(files[0], reference.path)


def test_non_finite_features_are_refused(tmp_path):
    ex = extractors.load_extractor("pixels:8")
    ex.forward = lambda images, kinds: {"visual": images.flatten(1) * float("nan")}
    with pytest.raises(FeatkitError, match="non-finite 'visual' features"):
        extract("pixels:8", "digits", splits=["val"], cache_dir=tmp_path, progress=False, extractor=ex)
    assert not list(tmp_path.rglob("*.h5"))


def test_disk_full_is_a_one_line_error(tmp_path, monkeypatch):
    import errno

    import featkit.cache as cache_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.np, "savez", full)
    with pytest.raises(CacheError, match="disk full"):
        extract("pixels:8", "digits", splits=["val"], cache_dir=tmp_path, progress=False)


def test_load_without_cache_names_the_command(tmp_path):
    with pytest.raises(CacheError, match="featkit extract --model pixels:8 --dataset digits --splits test"):
        featkit.load("pixels:8", "digits", "test", cache_dir=tmp_path)


def test_info_json_roundtrip(digits_cache):
    path = featkit.load("pixels:8", "digits", "test", cache_dir=digits_cache).path
    out = subprocess.run([sys.executable, "-m", "featkit", "info", str(path), "--json"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    info = json.loads(out.stdout)
    assert info["model"] == "pixels:8" and info["features"]["visual"] == [450, 192]


@pytest.mark.parametrize("name", ["cub", "cars"])
def test_equivalent_roots_share_one_cache_entry(tmp_path, name):
    from featkit.testing.datasets import make_dataset, torchvision_md5_bypassed

    generated = make_dataset(name, tmp_path / "data")
    inner = {"cub": "CUB_200_2011", "cars": "stanford_cars"}[name]
    cache = tmp_path / "cache"
    with torchvision_md5_bypassed():
        parent = extract("pixels:8", name, data_root=generated.root, splits=["test"],
                         cache_dir=cache, progress=False)[0]
        folder = extract("pixels:8", name, data_root=generated.root / inner, splits=["test"],
                         cache_dir=cache, progress=False)[0]
    assert not parent.cached and folder.cached and folder.path == parent.path
    expected = str((generated.root / inner).resolve())
    assert featkit.load_file(parent.path, "visual").meta["data_root"] == expected
