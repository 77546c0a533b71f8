"""Weights identity: sha256 of a file or folder, each unchanged file read once per process."""

from __future__ import annotations

import hashlib
import os

import pytest

from extractors import weights as w
from featkit.errors import MissingWeightsError


@pytest.fixture
def reads(monkeypatch):
    """Paths the hasher read from disk, in order (the memo is emptied for the test)."""
    seen: list[str] = []
    read = w._read_sha256

    def counting(path, *args, **kwargs):
        seen.append(path.name)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(w, "_DIGESTS", {})
    monkeypatch.setattr(w, "_read_sha256", counting)
    return seen


def _folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"a" * 1000)
    (root / "sub" / "config.json").write_text("{}")
    return root


def test_a_folder_is_hashed_once_however_often_it_is_asked_for(tmp_path, reads):
    folder = _folder(tmp_path / "weights")
    first = w.weights_identity(folder)
    assert sorted(reads) == ["config.json", "model.safetensors"]
    for spelling in (folder, str(folder), tmp_path / "weights" / "sub" / ".."):
        assert w.weights_identity(spelling) == first
    assert len(reads) == 2
    digest = hashlib.sha256()
    for name, content in (("model.safetensors", b"a" * 1000), ("sub/config.json", b"{}")):
        digest.update(name.encode())
        digest.update(hashlib.sha256(content).hexdigest().encode())
    assert first == f"sha256:{digest.hexdigest()}"  # the identity itself is unchanged


def test_a_changed_file_is_hashed_again_and_only_it(tmp_path, reads):
    folder = _folder(tmp_path / "weights")
    before = w.weights_identity(folder)
    target = folder / "model.safetensors"
    stat = target.stat()
    target.write_bytes(b"b" * 1000)  # same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    reads.clear()
    after = w.weights_identity(folder)
    assert reads == ["model.safetensors"] and after != before
    assert w.weights_identity(target) == f"sha256:{hashlib.sha256(b'b' * 1000).hexdigest()}"
    assert reads == ["model.safetensors"]


def test_missing_weights_are_one_line(tmp_path):
    with pytest.raises(MissingWeightsError, match="weights not found") as info:
        w.weights_identity(tmp_path / "nowhere")
    assert "\n" not in str(info.value)
