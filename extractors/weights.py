"""Local weights: identity (sha256) and loading, shared by the families."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from featkit.errors import MissingWeightsError

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


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """Read a ``.safetensors`` or torch checkpoint; returns (state_dict, identity)."""
    path = Path(path)
    identity = weights_identity(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state, identity
