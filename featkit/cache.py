"""The HDF5 feature cache: keys, crash-safe shards, final assembly, locking and reading.

One file per key (model + weights identity + preprocessing + extractor settings, dataset, split):
``<root>/<model-slug>/<dataset>/<split>-<digest>.h5``. Extraction writes fixed-size shards into
``<file>.parts/`` (each written to a temporary file and renamed into place, so a shard is either
whole or absent), then assembles the final file under a temporary name and renames it into place.
A killed run therefore loses at most the shard in progress, and a final ``.h5`` is always complete.

The key's split digest covers each image file's size and modification time (extraction with
``verify`` also records the images' bytes in a ``contents`` digest and checks it); feature and label datasets carry fletcher32 checksums per chunk; and
:func:`featkit.cache_files.check_file` tells a usable file from a truncated, corrupt or foreign one (another key's
file under this name), in one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featkit._version import __version__
from featkit.errors import CacheError, FeatkitError

if TYPE_CHECKING:
    from featkit.datasets import Sample

CACHE_FORMAT = 1
FEATURES_GROUP = "features"
#: bytes per HDF5 chunk of a feature dataset (each chunk carries a fletcher32 checksum)
CHUNK_BYTES = 1 << 22


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$FEATKIT_CACHE``, else ``./cache``."""
    return Path(cache_dir or os.environ.get("FEATKIT_CACHE") or "cache")


def slug(text: str) -> str:
    """A file-system-safe name for a model id (``open_clip:ViT-B-32:openai`` -> ``open_clip__ViT-B-32__openai``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", text).strip("_") or "model"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def sample_file(sample: Sample) -> str | None:
    """The file an image is read from, or None for in-memory datasets (digits, CIFAR batches)."""
    locator = sample.locator
    return os.fspath(locator) if isinstance(locator, (str, os.PathLike)) else None


def file_stat(path: str) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file, ``(-1, -1)`` when it is missing (extraction then reports
    it as an unreadable image)."""
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def samples_digest(samples: Sequence[Sample]) -> str:
    """Digest of a split's contents: each sample's id and label and, for an image stored as a
    file, that file's size and modification time, so a changed split, or a replaced or fixed
    image, never reuses old features. In-memory datasets (digits) hash ids and labels only,
    exactly as before files were stat'ed, so their keys did not change."""
    digest = hashlib.sha256()
    for sample in samples:
        line = f"{sample.sample_id}\t{int(sample.label)}"
        path = sample_file(sample)
        if path is not None:
            size, mtime_ns = file_stat(path)
            line += f"\t{size}\t{mtime_ns}"
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def contents_digest(samples: Sequence[Sample]) -> str:
    """Digest of a split's image bytes (``featkit extract --verify``): ids, labels and each
    file's sha256, for changes that keep a file's size and modification time."""
    digest = hashlib.sha256()
    for sample in samples:
        path = sample_file(sample)
        content = _file_sha256(path) if path is not None else "-"
        digest.update(f"{sample.sample_id}\t{int(sample.label)}\t{content}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


def key_digest(fields: Mapping[str, Any]) -> str:
    """The 16-hex-digit digest a cache file is named by, from its key fields."""
    return hashlib.sha256(_canonical_json(dict(fields)).encode()).hexdigest()[:16]


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
        return key_digest(self.as_dict())

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


#: errno values that mean "no room to write": the disk, a quota, or a file size limit
_NO_ROOM = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file size limit reached"}


def _disk_full(err: OSError, path: Path) -> FeatkitError:
    return CacheError(
        f"{_NO_ROOM.get(err.errno, 'disk full')} while writing {path}; free space there or "
        f"choose another --cache-dir (finished shards are kept and the next run resumes)"
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
        if err.errno in _NO_ROOM:
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


def read_shard_rows(parts: Path, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished shard's ``(positions, skipped)`` without its features, or None."""
    path = shard_path(parts, index)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return data["positions"], data["skipped"]
    except (OSError, ValueError, KeyError, EOFError):
        return None


def read_shard_kind(parts: Path, index: int, kind: str) -> np.ndarray:
    """One kind's features of one finished shard (npz members load one at a time)."""
    with np.load(shard_path(parts, index)) as data:
        return data[f"kind/{kind}"]


@dataclass(frozen=True)
class StreamedColumn:
    """One kind's ``rows x dim`` features handed to :func:`write_final` as blocks (a shard at
    a time), so assembling a file holds one block in memory, not every kind of every shard."""

    rows: int
    dim: int
    blocks: Callable[[], Iterator[np.ndarray]]


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


#: writes after a failed one that :class:`_StopAtFirstError` keeps in memory (larger ones are
#: chunks of feature data, never read back while writing)
_HOLD_LIMIT = 1 << 20


class _StopAtFirstError(io.RawIOBase):
    """The file h5py writes the final cache file through (its ``fileobj`` driver): after the
    first failed write (disk full, quota, size limit) nothing more goes to disk and the error is
    remembered; later writes are kept in memory so HDF5 reads back what it wrote. HDF5 never
    sees a failed write, so its handles close cleanly and the error is raised once they are
    closed: one line, instead of h5py tracebacks, "Exception ignored" traces and a crash."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "w+b", buffering=0)
        self.error: OSError | None = None
        self._held: list[tuple[int, bytes]] = []  # (offset, bytes) written after the error
        self._size = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == io.SEEK_END:
            return self._file.seek(self._size + offset)
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start = self._file.tell()
        got = self._file.readinto(view) or 0
        view[got:] = bytes(len(view) - got)
        for offset, data in self._held:  # later writes override earlier ones
            lo, hi = max(start, offset), min(start + len(view), offset + len(data))
            if lo < hi:
                view[lo - start : hi - start] = data[lo - offset : hi - offset]
        count = max(0, min(len(view), self._size - start))
        self._file.seek(start + count)
        return count

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        start = self._file.tell()
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += self._file.write(view[done:])
            except OSError as err:
                self.error = err
        if self.error is not None:
            if len(view) <= _HOLD_LIMIT:  # metadata HDF5 may read back; not bulk chunk data
                self._held.append((start, bytes(view)))
            self._file.seek(start + len(view))
        self._size = max(self._size, start + len(view))
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        if self.error is None:
            try:
                self._file.truncate(size)
            except OSError as err:
                self.error = err
        self._size = size
        return size

    def close(self) -> None:
        self._file.close()
        self._held.clear()
        super().close()


def _checksummed(parent, name: str, data: np.ndarray | StreamedColumn) -> None:
    """A numeric dataset in row chunks of about :data:`CHUNK_BYTES`, each with HDF5's
    fletcher32 checksum, so flipped bytes fail the read instead of reaching a probe. A
    :class:`StreamedColumn` is written block by block."""
    if isinstance(data, StreamedColumn):
        shape, dtype = (data.rows, data.dim), np.dtype(np.float32)
    else:
        shape, dtype = data.shape, data.dtype
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
    rows = max(1, min(shape[0], CHUNK_BYTES // row_bytes))
    if 0 in shape[1:] or (isinstance(data, StreamedColumn) and shape[0] == 0):
        empty = np.zeros(shape, dtype) if isinstance(data, StreamedColumn) else data
        parent.create_dataset(name, data=empty, track_times=False)  # nothing to checksum
        return
    if not isinstance(data, StreamedColumn):
        parent.create_dataset(name, data=data, chunks=(rows, *shape[1:]),
                              maxshape=(None, *shape[1:]), fletcher32=True, track_times=False)
        return
    dataset = parent.create_dataset(name, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]),
                                    maxshape=(None, *shape[1:]), fletcher32=True,
                                    track_times=False)
    start = 0
    for block in data.blocks():
        block = np.ascontiguousarray(block, dtype=np.float32)
        dataset[start:start + len(block)] = block
        start += len(block)
    if start != shape[0]:
        raise FeatkitError(f"{name}: the shards hold {start} rows, expected {shape[0]}; rerun "
                           f"with --overwrite")


def _fill(handle, target: _StopAtFirstError, arrays: Mapping[str, np.ndarray | StreamedColumn],
          labels,
          sample_ids: Sequence[str], class_names: Sequence[str], attrs: Mapping[str, Any]) -> None:
    """Write the datasets and attributes, stopping after the first step whose write failed (no
    room): the file is then only closed."""
    import h5py

    group = handle.create_group(FEATURES_GROUP, track_order=True)
    for kind, array in arrays.items():
        _checksummed(group, kind, array)
        if target.error is not None:
            return
    _checksummed(handle, "labels", np.asarray(labels, dtype=np.int64))
    for name, values in (("sample_ids", sample_ids), ("class_names", class_names)):
        if target.error is not None:
            return
        handle.create_dataset(name, data=np.array(list(values), dtype=object),
                              dtype=h5py.string_dtype("utf-8"), track_times=False)
    for name, value in attrs.items():
        if target.error is not None:
            return
        handle.attrs[name] = _attr_value(value)


def write_final(
    path: Path,
    *,
    features: Mapping[str, np.ndarray | StreamedColumn],
    labels: np.ndarray,
    sample_ids: Sequence[str],
    class_names: Sequence[str],
    attrs: Mapping[str, Any],
) -> Path:
    """Write the assembled file atomically (features and labels checksummed, no timestamps, the
    same bytes for the same contents). No room to write it is a one-line :class:`CacheError`;
    the shards stay, so the next run only assembles."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {kind: features[kind] if isinstance(features[kind], StreamedColumn)
              else np.ascontiguousarray(features[kind], dtype=np.float32)
              for kind in sorted(features)}
    needed = sum(4 * a.rows * a.dim if isinstance(a, StreamedColumn) else a.nbytes
                 for a in arrays.values()) + 8 * len(labels)
    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free < needed:
            raise _disk_full(OSError(errno.ENOSPC, "no space"), path)
    with atomic_path(path) as tmp:
        target = _StopAtFirstError(tmp)
        try:
            with h5py.File(target, "w", track_order=True) as handle:
                _fill(handle, target, arrays, labels, sample_ids, class_names, attrs)
        finally:
            target.close()
        if target.error is not None:
            raise target.error
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


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def base_attrs() -> dict[str, Any]:
    return {"featkit_version": __version__, "cache_format": CACHE_FORMAT, "created_at": now_iso(), "complete": True}
