"""The HDF5 feature cache: keys, crash-safe shards, final assembly, locking and reading.

One file per key (model + weights identity + preprocessing + extractor settings, dataset, split):
``<root>/<model-slug>/<dataset>/<split>-<digest>.h5``. Extraction writes fixed-size shards into
``<file>.parts/`` (each written to a temporary file and renamed into place, so a shard is either
whole or absent), then assembles the final file under a temporary name and renames it into place.
A killed run therefore loses at most the shard in progress, and a final ``.h5`` is always complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit._version import __version__
from featkit.errors import CacheError, FeatkitError

CACHE_FORMAT = 1
FEATURES_GROUP = "features"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$FEATKIT_CACHE``, else ``./cache``."""
    return Path(cache_dir or os.environ.get("FEATKIT_CACHE") or "cache")


def slug(text: str) -> str:
    """A file-system-safe name for a model id (``open_clip:ViT-B-32:openai`` -> ``open_clip__ViT-B-32__openai``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", text).strip("_") or "model"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def samples_digest(sample_ids: Sequence[str], labels: Sequence[int]) -> str:
    """Digest of a split's sample list, so a changed split never reuses old features."""
    digest = hashlib.sha256()
    for sid, label in zip(sample_ids, labels):
        digest.update(f"{sid}\t{int(label)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines the features of one split. Two runs share a file only when
    every field matches."""

    model: str
    weights: str
    preprocessing: Mapping[str, Any]
    settings: Mapping[str, Any]
    dataset: str
    data_root: str
    split: str
    samples: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "model": self.model,
            "weights": self.weights,
            "preprocessing": dict(self.preprocessing),
            "settings": dict(self.settings),
            "dataset": self.dataset,
            "data_root": self.data_root,
            "split": self.split,
            "samples": self.samples,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical_json(self.as_dict()).encode()).hexdigest()[:16]

    def path(self, root: Path) -> Path:
        return root / slug(self.model) / self.dataset / f"{self.split}-{self.digest}.h5"


def parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


# -- locking ----------------------------------------------------------------------------------


@contextlib.contextmanager
def key_lock(path: Path, *, wait: bool = True, on_wait=None) -> Iterator[None]:
    """An exclusive ``flock`` on ``<file>.lock``: one writer per key; released when the process
    dies, so a killed run never leaves a stale lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise CacheError(f"another featkit process is writing {path} (lock {lock_path})") from None
            if on_wait:
                on_wait(lock_path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- atomic writes ----------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _disk_full(err: OSError, path: Path) -> FeatkitError:
    return CacheError(
        f"disk full while writing {path}; free space there or choose another --cache-dir "
        f"(finished shards are kept and the next run resumes)"
    )


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if err.errno == errno.ENOSPC:
            raise _disk_full(err, path) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# -- shards -----------------------------------------------------------------------------------


@dataclass
class Shard:
    """Rows ``[start, stop)`` of a split: features per kind for the rows that decoded, their
    positions, and the positions skipped as unreadable."""

    index: int
    positions: np.ndarray
    features: dict[str, np.ndarray]
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def shard_path(parts: Path, index: int) -> Path:
    return parts / f"shard-{index:06d}.npz"


def write_shard(parts: Path, shard: Shard) -> Path:
    parts.mkdir(parents=True, exist_ok=True)
    path = shard_path(parts, shard.index)
    arrays = {f"kind/{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in shard.features.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, positions=shard.positions.astype(np.int64), skipped=shard.skipped.astype(np.int64), **arrays)
    return path


def read_shard(parts: Path, index: int) -> Shard | None:
    """A finished shard, or None if absent or unreadable (then it is redone)."""
    path = shard_path(parts, index)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            features = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("kind/")}
            return Shard(index, data["positions"], features, data["skipped"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def shard_kinds(parts: Path, index: int) -> set[str] | None:
    path = shard_path(parts, index)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return {k.split("/", 1)[1] for k in data.files if k.startswith("kind/")}
    except (OSError, ValueError, EOFError):
        return None


def write_parts_meta(parts: Path, meta: Mapping[str, Any]) -> None:
    """Record the key and shard size of a run in progress, so a resume uses the same shards."""
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / "meta.json"
    with atomic_path(path) as tmp:
        tmp.write_text(_canonical_json(dict(meta)))


def read_parts_meta(parts: Path) -> dict[str, Any] | None:
    path = parts / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- the final file ---------------------------------------------------------------------------


def write_final(
    path: Path,
    *,
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    sample_ids: Sequence[str],
    class_names: Sequence[str],
    attrs: Mapping[str, Any],
) -> Path:
    """Write the assembled file atomically (contiguous, uncompressed, no timestamps)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    str_dtype = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as handle:
            group = handle.create_group(FEATURES_GROUP, track_order=True)
            for kind in sorted(features):
                group.create_dataset(kind, data=np.ascontiguousarray(features[kind], dtype=np.float32), track_times=False)
            handle.create_dataset("labels", data=np.asarray(labels, dtype=np.int64), track_times=False)
            handle.create_dataset("sample_ids", data=np.array(list(sample_ids), dtype=object), dtype=str_dtype, track_times=False)
            handle.create_dataset("class_names", data=np.array(list(class_names), dtype=object), dtype=str_dtype, track_times=False)
            for name, value in attrs.items():
                handle.attrs[name] = _attr_value(value)
    return path


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return _canonical_json(value)
    if value is None:
        return "null"
    return value


def read_attrs(path: Path) -> dict[str, Any]:
    """Provenance attributes, JSON values decoded."""
    import h5py

    with h5py.File(path, "r") as handle:
        return _decode_attrs(handle.attrs)


def _decode_attrs(attrs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and value[:1] in "{[" or value == "null":
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[name] = value
    return out


def file_kinds(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as handle:
        return list(handle[FEATURES_GROUP].keys())


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def base_attrs() -> dict[str, Any]:
    return {"featkit_version": __version__, "cache_format": CACHE_FORMAT, "created_at": now_iso(), "complete": True}
