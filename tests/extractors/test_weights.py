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


# -- a corrupt or foreign --weights file: one line, never advice to unpickle unsafely -------------


class NotWeights:
    """An arbitrary object: a pickle of it is what ``torch.save(model)`` of a module looks like
    to torch's safe loader."""


def _assert_corrupt_line(err: pytest.ExceptionInfo, path) -> None:
    message = str(err.value)
    assert f"weights file {path} is corrupt or not a checkpoint" in message
    assert "\n" not in message and "weights_only" not in message


@pytest.mark.parametrize("name, content, why", [
    ("garbage.pt", os.urandom(64).replace(b"PK", b"pk").replace(b"\x80", b"\x81"),
     "neither a torch zip archive"),
    ("short.safetensors", b"1234", "shorter than a safetensors header"),
    ("huge.safetensors", (10**9).to_bytes(8, "little") + b"{}", "its header claims"),
    ("text.safetensors", (4).to_bytes(8, "little") + b"\xff\xfe{}", "not safetensors JSON"),
])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, name, content, why):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(w.CorruptWeightsError, match=why) as err:
        w.check_checkpoint(path)
    _assert_corrupt_line(err, path)


def test_truncated_checkpoints_are_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    state = {"weight": torch.arange(4096, dtype=torch.float32)}
    torch.save(state, tmp_path / "full.pt")
    save_file(state, str(tmp_path / "full.safetensors"))
    for name, why in (("full.pt", "damaged or truncated zip"), ("full.safetensors", "truncated")):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        w.check_checkpoint(tmp_path / name)  # the whole file passes
        with pytest.raises(w.CorruptWeightsError, match=why) as err:
            w.check_checkpoint(cut)
        _assert_corrupt_line(err, cut)


def test_a_pickle_the_safe_loader_refuses_is_one_line_without_unsafe_advice(tmp_path):
    import torch

    path = tmp_path / "model.pt"
    torch.save({"model": NotWeights()}, path)
    w.check_checkpoint(path)  # a well-formed torch archive: only unpickling tells
    with pytest.raises(w.CorruptWeightsError, match="safe loader refused") as err:
        w.load_state_dict(path)
    _assert_corrupt_line(err, path)
    torch.save([1, 2], path)
    with pytest.raises(w.CorruptWeightsError, match="holds a list, not a state dict"):
        w.load_state_dict(path)


def test_legacy_and_zip_torch_checkpoints_load(tmp_path):
    import torch

    state = {"weight": torch.ones(3)}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        loaded, identity = w.load_state_dict(tmp_path / name)
        assert torch.equal(loaded["weight"], state["weight"]) and identity.startswith("sha256:")
