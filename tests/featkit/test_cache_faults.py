"""Stale, corrupt and foreign cache files (issue 15, items 2, 3 and 6's disk full).

The cache knows its inputs (each image file's size and mtime, its bytes with ``verify``); when
several files match, probes pick the one whose key matches the data on disk (``data_root``) or
the newest with a note; a truncated, corrupt or foreign file is one line and ``extract``
rebuilds it; a full disk while writing the final file is one line and exit 2.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import featkit
from featkit.cache_files import check_file
from featkit.errors import CacheError
from featkit.extraction import extract
from featkit.tasks.loading import FeatureSource
from featkit.testing.datasets import class_image, make_imagefolder

REPO = Path(__file__).resolve().parents[2]
#: cache file names of the bundled digits, written by the code before issue 15: its images are
#: in memory (no files to stat), so its keys must not change
DIGITS_FILES = {
    "pixels:8": ("train-ac95ec9fc22d22ff.h5", "val-b9553ba0f6a65bee.h5", "test-69a8becdd8bb42e2.h5"),
    "test:tiny-clip": ("train-cdf6f20711f88b4e.h5", "val-55f22fe1ee063b1e.h5",
                       "test-100e2d61383aa7c3.h5"),
}


def _extract(model: str, dataset: str, cache: Path, **kwargs):
    return extract(model, dataset, cache_dir=cache, progress=False, num_workers=0, **kwargs)


def _cli(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "featkit", *args], capture_output=True, text=True,
                          env=env, preexec_fn=preexec_fn)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("featkit: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    return make_imagefolder(tmp_path / "data", n_classes=2, train_per_class=3, test_per_class=3,
                            image_size=16)


def _replace_image(path: Path, keep_stat: bool = False) -> None:
    """Write other pixels to ``path``; with ``keep_stat`` the same size and mtime as before."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    if keep_stat:  # flip pixel bytes of the PNG's data, keep its length (decodes or not: changed)
        data[-20] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:
        class_image(1, 99, size=16).save(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _flip_feature_byte(path: Path, kind: str = "visual") -> None:
    with h5py.File(path, "r") as handle:
        offset = handle[f"features/{kind}"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 17)
        byte = handle.read(1)
        handle.seek(offset + 17)
        handle.write(bytes([byte[0] ^ 0x10]))


# -- the cache knows its inputs -----------------------------------------------------------------


def test_digits_keys_are_unchanged(digits_cache):
    for model, names in DIGITS_FILES.items():
        folder = digits_cache / model.replace(":", "__") / "digits"
        assert sorted(p.name for p in folder.glob("*.h5")) == sorted(names)


def test_a_replaced_image_is_extracted_again(tmp_path, folder):
    cache = tmp_path / "cache"
    first = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0]
    image = folder.root / folder.ids("test")[0]
    _replace_image(image)
    second = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0]
    assert not second.cached and second.path != first.path
    old, new = featkit.load_file(first.path), featkit.load_file(second.path)
    assert not np.array_equal(old.features[0], new.features[0])
    np.testing.assert_array_equal(old.features[1:], new.features[1:])


def test_verify_hashes_the_bytes(tmp_path, folder, capsys):
    cache = tmp_path / "cache"
    first = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0]
    _replace_image(folder.root / folder.ids("test")[1], keep_stat=True)
    assert _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0].cached
    verified = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"],
                        verify=True, skip_bad=True)[0]
    assert not verified.cached and verified.path == first.path
    assert "extracted without --verify" in capsys.readouterr().err
    again = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"],
                     verify=True, skip_bad=True)[0]
    assert again.cached
    _replace_image(folder.root / folder.ids("test")[2], keep_stat=True)
    third = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"],
                     verify=True, skip_bad=True)[0]
    assert not third.cached and "bytes changed since extraction" in capsys.readouterr().err


# -- several files match: the data on disk decides, else the newest with a note ----------------


def test_changed_dataset_does_not_lock_probes_out(tmp_path, folder):
    cache = tmp_path / "cache"
    first = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0]
    second_root = tmp_path / "second"
    shutil.copytree(folder.root, second_root)
    (second_root / folder.ids("test")[0]).unlink()  # the second copy lost an image
    second = _extract("pixels:8", "imagefolder", cache, data_root=second_root, splits=["test"])[0]
    assert second.path != first.path

    newest = featkit.load("pixels:8", "imagefolder", "test", cache_dir=cache)
    assert newest.path == second.path and len(newest) == 5
    assert len(newest.notes) == 1 and "2 cache files match" in newest.notes[0]
    assert str(first.path) in newest.notes[0] and "--data-root" in newest.notes[0]

    mine = featkit.load("pixels:8", "imagefolder", "test", cache_dir=cache, data_root=folder.root)
    assert mine.path == first.path and len(mine) == 6 and mine.notes == []
    source = FeatureSource("pixels:8", cache_dir=cache, data_root=second_root)
    assert source.load("imagefolder", "test").path == second.path

    _replace_image(folder.root / folder.ids("test")[1])
    with pytest.raises(CacheError, match="match the data under") as info:
        featkit.load("pixels:8", "imagefolder", "test", cache_dir=cache, data_root=folder.root)
    assert f"--data-root {folder.root}" in str(info.value) and "\n" not in str(info.value)


def test_commands_pass_the_data_root_to_the_source():
    import argparse

    from featkit.commands.common import add_model_dataset, source_from

    parser = argparse.ArgumentParser()
    add_model_dataset(parser, data_root=True)
    parser.add_argument("--features", default="visual")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(["--model", "pixels:8", "--dataset", "imagefolder", "--data-root", "/d"])
    assert source_from(args).data_root == "/d"


# -- corrupt, truncated and foreign files ---------------------------------------------------------


def test_flipped_feature_bytes_are_caught_then_rebuilt(tmp_path, capsys):
    cache = tmp_path / "cache"
    good = _extract("pixels:8", "digits", cache, splits=["val"])[0]
    clean = featkit.load_file(good.path).features.copy()
    _flip_feature_byte(good.path)
    with pytest.raises(CacheError, match="corrupt data in|corrupt data") as info:
        featkit.load("pixels:8", "digits", "val", cache_dir=cache)
    assert "featkit extract --model pixels:8 --dataset digits --splits val" in str(info.value)
    assert "\n" not in str(info.value)
    assert check_file(good.path, data=True).startswith("corrupt data in features/visual")
    rebuilt = _extract("pixels:8", "digits", cache, splits=["val"])[0]
    assert not rebuilt.cached and "removing it and extracting again" in capsys.readouterr().err
    np.testing.assert_array_equal(featkit.load_file(rebuilt.path).features, clean)


def test_truncated_file_is_one_line_for_probe_and_rebuilt_by_extract(tmp_path):
    cache = tmp_path / "cache"
    for split in ("train", "val", "test"):
        _extract("pixels:8", "digits", cache, splits=[split])
    test_file = next(cache.rglob("test-*.h5"))
    with open(test_file, "r+b") as handle:
        handle.truncate(test_file.stat().st_size // 2)
    probe = _cli("retrieval", "--model", "pixels:8", "--dataset", "digits", "--cache-dir", str(cache),
                 "--no-progress")
    _one_line_error(probe, str(test_file), "truncated", "featkit extract --model pixels:8")
    rebuilt = _cli("extract", "--model", "pixels:8", "--dataset", "digits", "--splits", "test",
                   "--cache-dir", str(cache), "--no-progress")
    assert rebuilt.returncode == 0 and "Traceback" not in rebuilt.stderr, rebuilt.stderr
    assert "truncated" in rebuilt.stderr and "new" in rebuilt.stdout
    assert check_file(test_file, data=True) is None


def test_foreign_file_is_detected_and_rebuilt(tmp_path, capsys):
    cache = tmp_path / "cache"
    mine = _extract("pixels:8", "digits", cache, splits=["val"])[0]
    other = _extract("test:tiny-clip", "digits", cache, splits=["val"])[0]
    shutil.copyfile(other.path, mine.path)  # another model's file under this model's name
    with pytest.raises(CacheError, match="foreign"):
        featkit.load_file(mine.path)
    with pytest.raises(CacheError, match="no usable cached features.*foreign"):
        featkit.load("pixels:8", "digits", "val", cache_dir=cache)
    info = _cli("info", str(mine.path))
    assert info.returncode == 0 and "foreign" in info.stdout
    again = _extract("pixels:8", "digits", cache, splits=["val"])[0]
    assert not again.cached and "foreign" in capsys.readouterr().err
    assert featkit.load_file(mine.path).meta["model"] == "pixels:8"


def test_a_broken_file_beside_a_good_one_is_skipped_with_a_note(tmp_path, folder):
    cache = tmp_path / "cache"
    first = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0]
    _replace_image(folder.root / folder.ids("test")[0])
    second = _extract("pixels:8", "imagefolder", cache, data_root=folder.root, splits=["test"])[0]
    first.path.write_bytes(b"not hdf5")
    fs = featkit.load("pixels:8", "imagefolder", "test", cache_dir=cache)
    assert fs.path == second.path
    assert len(fs.notes) == 1 and fs.notes[0].startswith(f"skipped {first.path}: unreadable")


# -- no room for the final file -------------------------------------------------------------------


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_while_writing_the_final_file_is_one_line_and_resumable(tmp_path):
    cache = tmp_path / "cache"
    argv = ["extract", "--model", "pixels:8", "--dataset", "digits", "--splits", "train",
            "--shard-size", "200", "--num-workers", "0", "--cache-dir", str(cache), "--no-progress"]
    # shards (~155 KB) fit under the limit, the final file (~930 KB) does not
    full = _cli(*argv, preexec_fn=_file_size_limit(400_000))
    _one_line_error(full, "file size limit reached while writing", "next run resumes")
    assert not list(cache.rglob("*.h5")) and not list(cache.rglob(".*.tmp-*"))
    assert len(list(cache.rglob("shard-*.npz"))) == 7
    resumed = _cli(*argv)
    assert resumed.returncode == 0, resumed.stderr
    assert "7 shards resumed" in resumed.stdout
    assert check_file(next(cache.rglob("train-*.h5")), data=True) is None


class _FillsUp:
    """A file that takes ``room`` bytes, then fails every write with ENOSPC."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        import errno

        size = len(memoryview(data))
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_no_space_in_the_final_write_closes_the_file_cleanly(tmp_path, monkeypatch):
    from featkit import cache as cache_mod

    init = cache_mod._StopAtFirstError.__init__

    def small_disk(self, path):
        init(self, path)
        self._file = _FillsUp(self._file, 50_000)

    monkeypatch.setattr(cache_mod._StopAtFirstError, "__init__", small_disk)
    with pytest.raises(CacheError, match="disk full while writing"):
        _extract("pixels:8", "digits", tmp_path, splits=["val"])
    assert not list(tmp_path.rglob("*.h5")) and not list(tmp_path.rglob(".*.tmp-*"))
    assert list(tmp_path.rglob("shard-*.npz"))


# -- a corrupt --weights file ---------------------------------------------------------------------


class _Module:
    """What a pickled model object looks like to torch's safe loader."""


@pytest.mark.parametrize("model", ["test:tiny-clip", "test:tiny-dinov2"])
def test_corrupt_weights_are_one_line_without_unsafe_advice(tmp_path, model):
    import torch

    from featkit.errors import FeatkitError

    pickled = tmp_path / "model.pt"
    torch.save({"model": _Module()}, pickled)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 64)
    for path in (pickled, garbage):
        with pytest.raises(FeatkitError, match="is corrupt or not a checkpoint") as err:
            _extract(model, "digits", tmp_path / "cache", splits=["val"], weights=path)
        assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_corrupt_weights_on_the_command_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 64)
    result = _cli("extract", "--model", "test:tiny-clip", "--dataset", "digits", "--splits", "val",
                  "--weights", str(garbage), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    line = _one_line_error(result, str(garbage), "corrupt or not a checkpoint")
    assert "weights_only" not in result.stderr and "weights_only" not in line
