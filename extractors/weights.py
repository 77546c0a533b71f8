"""Local weights: identity (sha256), a check that a file is a checkpoint, and loading,
shared by the families.

A corrupt, truncated or foreign file passed as weights is one line naming it ("corrupt or not a
checkpoint"), checked from its header before any library reads it; featkit never suggests
unpickling it with ``weights_only=False``, which would run code from an untrusted file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from featkit.errors import FeatkitError, MissingWeightsError

#: suffixes of torch checkpoints (zip archives or the legacy pickle format)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
#: how torch's legacy (non-zip) format begins: a protocol-2 pickle of its magic number
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")

_READ_CHUNK = 1 << 22
#: (resolved path, inode, size, mtime_ns) -> hex digest: files already read by this process
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _read_sha256(path: Path, chunk: int = _READ_CHUNK) -> str:
    """sha256 of a file's bytes, read from disk (the only place that reads them)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read once per process: a file whose inode, size and modification time
    are unchanged since this process hashed it is not read again (a changed one is)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _read_sha256(resolved)
    return _DIGESTS[key]


def weights_identity(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a weights file, or of a directory's weight files (names and contents).

    Every ``featkit.load`` with ``--weights``/``--adapter`` asks for this; unchanged files are
    hashed once per process (see :func:`file_sha256`), so a multi-GB folder is read once.
    """
    path = Path(path)
    if path.is_file():
        return f"sha256:{file_sha256(path)}"
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.relative_to(path).as_posix().encode())
            digest.update(file_sha256(item).encode())
        return f"sha256:{digest.hexdigest()}"
    raise MissingWeightsError(f"weights not found: {path} (pass an existing file or directory to --weights)")


class CorruptWeightsError(FeatkitError):
    """A weights file that is not a readable checkpoint of its format."""


def corrupt_weights(path: str | os.PathLike, why: str) -> CorruptWeightsError:
    return CorruptWeightsError(
        f"weights file {path} is corrupt or not a checkpoint ({why}); pass a .safetensors file or "
        f"a torch checkpoint (state dict) of the model's weights"
    )


def check_checkpoint(path: Path, *, any_suffix: bool = False) -> None:
    """Raise :func:`corrupt_weights` when ``path`` is not a checkpoint of the format its suffix
    names, from its header alone (a .safetensors header and tensor extent; a torch zip archive
    with its pickle, or torch's legacy pickle). Other files of a folder are not checked; with
    ``any_suffix`` (a file given itself as --weights) one without a known suffix is checked as
    a torch file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        why = _safetensors_problem(path)
    elif suffix in TORCH_SUFFIXES or (any_suffix and suffix in ("", ".pkl")):
        why = _torch_problem(path)
    else:
        return
    if why:
        raise corrupt_weights(path, why)


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        length = int.from_bytes(head, "little")
        if not 0 < length <= size - 8:
            return f"its header claims {length} bytes but the file has {size}"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError):
            return "its header is not safetensors JSON"
    if not isinstance(header, dict):
        return "its header is not safetensors JSON"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2]
    end = 8 + length + max(ends, default=0)
    if end > size:
        return f"truncated: its tensors end at byte {end} but the file has {size}"
    return None


def _torch_problem(path: Path) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(len(_TORCH_LEGACY_MAGIC))
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return None
    if not head.startswith(b"PK"):
        return "neither a torch zip archive nor torch's legacy format"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a damaged or truncated zip archive"
    if not any(n.endswith(("/data.pkl", "/constants.pkl")) or n == "data.pkl" for n in names):
        return "a zip archive without torch's data.pkl"
    return None


@contextlib.contextmanager
def reading_checkpoint(path: str | os.PathLike) -> Iterator[None]:
    """Around a library call that reads the weights at ``path`` (a file or folder): a file is
    first checked from its header (:func:`check_checkpoint`), then the library's failure to
    read or unpickle it (corrupt tensor data, a pickle torch's safe loader refuses) becomes the
    one-line :func:`corrupt_weights` error, without the library's advice to unpickle unsafely."""
    import pickle

    if Path(path).is_file():
        check_checkpoint(Path(path), any_suffix=True)
    try:
        yield
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as err:
        raise corrupt_weights(path, _reason(err)) from None
    except RuntimeError as err:
        text = str(err)
        if not any(s in text for s in ("weights_only", "PytorchStreamReader", "zip archive",
                                       "unpickl", "invalid load key", "deserializ")):
            raise
        raise corrupt_weights(path, _reason(err)) from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":  # safetensors' own error type
            raise
        raise corrupt_weights(path, _reason(err)) from None


def _reason(err: BaseException) -> str:
    """The library's complaint in a few words, never its advice to load unsafely."""
    text = " ".join(str(err).split())
    if "weights_only" in text or "unpickl" in text.lower():
        return "torch's safe loader refused its pickled contents"
    return text[:120] or type(err).__name__


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """Read a ``.safetensors`` or torch checkpoint; returns (state_dict, identity). A file that
    is not one, or holds no tensor dict, is a one-line :class:`CorruptWeightsError`."""
    path = Path(path)
    identity = weights_identity(path)  # the one-line error when it is missing
    with reading_checkpoint(path):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise corrupt_weights(path, f"it holds a {type(state).__name__}, not a state dict")
    return state, identity
