"""Local weights: identity (sha256) and loading, shared by the families."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from featkit.errors import MissingWeightsError


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a weights file, or of a directory's weight files (names and contents)."""
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
