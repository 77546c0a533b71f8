"""What the cache holds, checked against the data on disk (``featkit cache ls`` and ``prune``).

A final file is *complete* (usable, and its key matches the data at the root it records),
*stale* (that data changed since: ids, labels, or an image file's size or modification time),
*no data* (its root cannot be opened now; kept, since a drive may just be unmounted),
*corrupt* (truncated, unreadable, or with ``verify`` a checksum mismatch) or *foreign* (another
key's file under this name). An unfinished run's shard folder is *partial* (resumable),
*running* (its key is locked) or *orphan* (its key is stale, or its final file exists); a
temporary file or a lock file with nothing left to guard is an *orphan* too. :func:`prune`
removes the stale, corrupt and foreign files and the orphans, never anything whose key a
running extraction holds.

Class-embedding files (``_text/<model>/<dataset>/``, :mod:`featkit.text_cache`) are listed with
split ``text``: keyed by the class names and templates, a file is never stale (other names get
another file); it is *complete*, *corrupt* or *foreign*, and its shards, temporary files and
locks are judged as the image files' are.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featkit.cache import key_lock, read_parts_meta, samples_digest
from featkit.cache_files import inspect_file, named_key
from featkit.errors import CacheError, FeatkitError
from featkit.text_cache import TEXT_FOLDER

#: statuses ``prune`` removes
PRUNABLE = ("stale", "corrupt", "foreign", "orphan")
#: the split column of class-embedding files (under :data:`featkit.text_cache.TEXT_FOLDER`)
TEXT_SPLIT = "text"


@dataclass
class Entry:
    """One thing under the cache root: a final file, a shard folder, a temporary or lock file."""

    path: Path
    what: str  # "file", "shards", "temp" or "lock"
    status: str
    model: str = ""
    dataset: str = ""
    split: str = ""
    n: int | None = None
    kinds: list[str] = field(default_factory=list)
    key: str = ""
    size: int = 0
    detail: str = ""

    @property
    def prunable(self) -> bool:
        return self.status in PRUNABLE

    def row(self) -> dict[str, str]:
        """The entry as a table row (``featkit cache ls``)."""
        n = "" if self.n is None else (f"{self.n} shards" if self.what == "shards" else str(self.n))
        status = self.status if self.what in ("file", "shards") else f"{self.status} {self.what}"
        return {"model": self.model, "dataset": self.dataset, "split": self.split, "n": n,
                "kinds": ",".join(self.kinds), "key": self.key, "size": human_size(self.size),
                "status": status + (f" ({_short(self.detail)})" if self.detail else ""),
                "path": str(self.path)}


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


class _CurrentData:
    """The data on disk as extraction would key it, per (dataset, root, split), opened once."""

    def __init__(self) -> None:
        self._digests: dict[tuple[str, str, str], tuple[str, str] | str] = {}

    def key(self, dataset: str, root: str, split: str) -> tuple[str, str] | str:
        """``(key root, samples digest)`` of the data there, or why it cannot be read."""
        wanted = (dataset, root, split)
        if wanted not in self._digests:
            from featkit.datasets import open_dataset

            try:
                ds = open_dataset(dataset, root)
                self._digests[wanted] = (ds.key_root(), samples_digest(ds.samples(split)))
            except (FeatkitError, OSError) as err:
                self._digests[wanted] = " ".join(str(err).split())[:120]
        return self._digests[wanted]

    def status(self, fields: dict | None) -> tuple[str, str]:
        """(status, detail) of something keyed by ``fields`` against the data on disk."""
        if not isinstance(fields, dict) or not {"dataset", "data_root", "split", "samples"} <= set(fields):
            return "unknown", "key fields not recorded"
        current = self.key(str(fields["dataset"]), str(fields["data_root"]), str(fields["split"]))
        if isinstance(current, str):
            return "no data", current
        if current != (fields["data_root"], fields["samples"]):
            return "stale", "the data changed since extraction"
        return "complete", ""


def _lock_held(lock: Path) -> bool:
    """Whether a running process holds this key's lock (tried without waiting)."""
    try:
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _final_of(path: Path, suffix: str) -> Path:
    """The final file a ``.parts`` folder, ``.lock`` or temporary file belongs to."""
    if suffix == "temp":  # .<name>.h5.tmp-<pid>
        return path.with_name(path.name[1:].rsplit(".tmp-", 1)[0])
    return path.with_name(path.name.removesuffix(suffix))


def scan(root: str | os.PathLike, *, verify: bool = False) -> list[Entry]:
    """Every cache file, shard folder, temporary and lock file under ``root`` (image features,
    then class embeddings under ``_text/``), with its status; ``verify`` reads every file's data
    (checksums) instead of only its structure and key."""
    root = Path(root)
    data = _CurrentData()
    entries: list[Entry] = []
    folders = [(p, False) for p in sorted(root.glob("*/*")) if not p.parent.name.startswith("_")]
    folders += [(p, True) for p in sorted((root / TEXT_FOLDER).glob("*/*"))]
    for folder, text in folders:
        if not folder.is_dir() or folder.name.endswith(".parts"):
            continue
        entries += [_file_entry(p, data, verify, text=text) for p in sorted(folder.glob("[!.]*.h5"))]
        entries += [_shards_entry(p, data, text=text) for p in sorted(folder.glob("*.h5.parts"))
                    if p.is_dir()]
        entries += [_temp_entry(p) for p in sorted(folder.glob(".*.h5.tmp-*"))]
    kept = {e.path for e in entries if not e.prunable}
    locks = [_lock_entry(lock, kept) for folder, _ in folders for lock in sorted(folder.glob("*.h5.lock"))]
    return entries + [e for e in locks if e.status != "in use"]  # a lock beside its file is normal


def _file_entry(path: Path, data: _CurrentData, verify: bool, *, text: bool = False) -> Entry:
    attrs, problem = inspect_file(path, data=verify)
    entry = Entry(path, "file", "", model=path.parent.parent.name, dataset=path.parent.name,
                  key=named_key(path) or "", size=path.stat().st_size)
    if attrs:
        entry.model, entry.split = str(attrs.get("model", "")), str(attrs.get("split", ""))
        entry.n, entry.kinds = attrs.get("n"), list(attrs.get("kinds") or [])
    if problem:
        entry.status = "foreign" if problem.startswith("foreign") else "corrupt"
        entry.detail = problem.removeprefix("foreign: ")
        return entry
    if text:
        entry.split, entry.status = TEXT_SPLIT, "complete"
        return entry
    entry.status, entry.detail = data.status(attrs.get("key_fields"))
    return entry


def _shards_entry(parts: Path, data: _CurrentData, *, text: bool = False) -> Entry:
    meta = read_parts_meta(parts) or {}
    fields = meta.get("key_fields") if isinstance(meta.get("key_fields"), dict) else {}
    final = _final_of(parts, ".parts")
    entry = Entry(parts, "shards", "", model=str(fields.get("model", "")), dataset=parts.parent.name,
                  split=str(fields.get("split", "")), n=len(list(parts.glob("shard-*.npz"))),
                  key=named_key(final) or "", size=_folder_size(parts))
    if _lock_held(final.with_name(final.name + ".lock")):
        entry.status = "running"
    elif final.exists():
        entry.status, entry.detail = "orphan", "its final file exists"
    elif meta.get("key") != entry.key:
        entry.status, entry.detail = "orphan", "no record of the run's key"
    elif text:
        entry.split, entry.status = TEXT_SPLIT, "partial"
    else:
        status, entry.detail = data.status(fields)
        entry.status = {"complete": "partial", "stale": "orphan"}.get(status, status)
    return entry


def _temp_entry(path: Path) -> Entry:
    final = _final_of(path, "temp")
    held = _lock_held(final.with_name(final.name + ".lock"))
    return Entry(path, "temp", "running" if held else "orphan", dataset=path.parent.name,
                 key=named_key(final) or "", size=path.stat().st_size)


def _lock_entry(lock: Path, kept: set[Path]) -> Entry:
    final = _final_of(lock, ".lock")
    guards = final in kept or parts_of(final) in kept
    status = "running" if _lock_held(lock) else ("in use" if guards else "orphan")
    return Entry(lock, "lock", status, dataset=lock.parent.name, key=named_key(final) or "")


def parts_of(final: Path) -> Path:
    return final.with_name(final.name + ".parts")


def prune(entries: Sequence[Entry]) -> Iterator[tuple[Entry, str]]:
    """Remove every prunable entry, each under its key's lock; yields ``(entry, outcome)``
    (``"removed"``, or why it was kept). A lock left guarding nothing goes too."""
    for entry in entries:
        if not entry.prunable:
            continue
        if entry.what == "lock":
            yield entry, _remove_lock(entry.path)
            continue
        final = _final_of(entry.path, {"shards": ".parts", "temp": "temp"}.get(entry.what, ""))
        try:
            with key_lock(final, wait=False):
                _remove(entry.path)
                if not final.exists() and not parts_of(final).exists():
                    final.with_name(final.name + ".lock").unlink(missing_ok=True)
        except CacheError:
            yield entry, "kept: an extraction is writing this key"
            continue
        yield entry, "removed"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove_lock(lock: Path) -> str:
    try:
        handle = open(lock)  # never created here: a lock already gone stays gone
    except FileNotFoundError:
        return "removed"
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "kept: an extraction holds it"
        lock.unlink(missing_ok=True)
    return "removed"
