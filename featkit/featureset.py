"""Reading cached features back: :class:`FeatureSet`, :func:`load` and :func:`load_file`.

:func:`load` picks one file among those cached for (model, dataset, split): with ``data_root``
the file whose key matches the data on disk there; otherwise the newest usable one. What a
reader should know about that choice (other matching files, files skipped as corrupt or
foreign) is in :attr:`FeatureSet.notes`; a file that cannot be used is a one-line
:class:`~featkit.errors.CacheError` with the command that rebuilds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractors.layers import same_block_kinds
from featkit.cache import FEATURES_GROUP, _decode_attrs, cache_root, slug
from featkit.cache_files import h5py_reason, inspect_file
from featkit.errors import CacheError, UnknownNameError, closest


@dataclass
class FeatureSet:
    """One feature kind of one split: NumPy arrays plus the file's provenance in ``meta``.

    ``notes`` are one-line warnings about how :func:`load` chose this file (e.g. other cache
    files matched); tasks carry them into their records' ``warnings``.
    """

    features: np.ndarray
    labels: np.ndarray
    sample_ids: list[str]
    class_names: list[str]
    meta: dict[str, Any]
    kind: str
    path: Path
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def model(self) -> str:
        return self.meta.get("model", "")

    @property
    def dataset(self) -> str:
        return self.meta.get("dataset", "")

    @property
    def split(self) -> str:
        return self.meta.get("split", "")


def load_file(path: str | os.PathLike, kind: str | None = None) -> FeatureSet:
    """Read one feature kind (default: the model's first kind) from a cache file.

    A truncated, corrupt (checksum mismatch) or foreign file is a one-line :class:`CacheError`.
    """
    path = Path(path)
    attrs, problem = inspect_file(path) if path.exists() else (None, None)
    hint = _rebuild_hint_from(attrs or {}, path)
    return _read(path, kind, hint, problem)


def _rebuild_hint_from(attrs: dict[str, Any], path: Path) -> str:
    model = attrs.get("model_alias") or attrs.get("model")
    if not model:
        return "delete it and rerun the 'featkit extract' command that made it"
    command = f"featkit extract --model {model} --dataset {attrs.get('dataset')} --splits {attrs.get('split')}"
    root = attrs.get("data_root")
    if root and not str(root).startswith("sklearn:"):
        command += f" --data-root {root}"
    return f"rebuild it with '{command}' (extract replaces corrupt files)"


def _read(path: Path, kind: str | None, hint: str, problem: str | None = None) -> FeatureSet:
    import h5py

    if not path.exists():
        raise CacheError(f"no cache file {path}")
    if problem:
        raise CacheError(f"{path}: {problem}; {hint}")
    try:
        with h5py.File(path, "r") as handle:
            kinds = list(handle[FEATURES_GROUP].keys())
            meta = _decode_attrs(handle.attrs)
            if kind is None:
                preferred = meta.get("kinds") or kinds
                kind = preferred[0] if preferred else None
            stored = kind
            if kind not in kinds:
                stored = next((k for k in same_block_kinds(str(kind), meta.get("layer_depths") or {})
                               if k in kinds), kind)
            if stored not in kinds:
                raise UnknownNameError(
                    f"{path} has no feature kind '{kind}'{closest(str(kind), kinds)} (kinds: {', '.join(kinds)}); "
                    f"extract it with --features {kind}"
                )
            dataset = handle[FEATURES_GROUP][stored]
            features = np.empty(dataset.shape, dtype=np.float32)
            if features.size:
                dataset.read_direct(features)
            labels = handle["labels"][()]
            sample_ids = list(handle["sample_ids"].asstr()[()])
            class_names = list(handle["class_names"].asstr()[()])
    except (OSError, KeyError, UnicodeDecodeError) as err:
        raise CacheError(f"{path}: corrupt data ({h5py_reason(err)}); {hint}") from None
    return FeatureSet(features, labels.astype(np.int64), sample_ids, class_names, meta, kind, path)


@dataclass
class _Matches:
    """Cache files of one (model, dataset, split): usable ones that match the request, with
    their attributes; unusable ones with the reason; and, with a data root, the usable ones
    extracted from other data."""

    usable: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    other_data: list[Path] = field(default_factory=list)


def _matches(model_id: str, dataset: str, split: str, *, cache_dir, weights, adapter,
             data_root) -> _Matches:
    from extractors.weights import weights_identity

    folder = cache_root(cache_dir) / slug(model_id) / dataset
    # identities are memoised per process: a probe command's several loads hash the folder once
    wanted_weights = weights_identity(weights) if weights is not None else None
    wanted_adapter = weights_identity(adapter) if adapter is not None else None
    wanted_data = _data_key(dataset, data_root, split) if data_root is not None else None
    found = _Matches()
    for path in sorted(folder.glob(f"{split}-*.h5")):
        attrs, problem = inspect_file(path)
        if problem:
            found.broken.append((path, problem))
            continue
        if wanted_weights is not None and attrs.get("weights") != wanted_weights:
            continue
        if (attrs.get("settings") or {}).get("adapter") != wanted_adapter:
            continue  # no adapter asked: only files extracted without one
        fields = attrs.get("key_fields") or {}
        if wanted_data is not None and (fields.get("data_root"), fields.get("samples")) != wanted_data:
            found.other_data.append(path)
            continue
        found.usable.append((path, attrs))
    return found


def _holds(attrs: dict[str, Any], kind: str) -> bool:
    """Whether a file with these attributes holds ``kind``, under its name or its block's other
    name (``cls@12`` / ``cls@-1``)."""
    names = {kind, *same_block_kinds(kind, attrs.get("layer_depths") or {})}
    return bool(names & set(attrs.get("kinds") or []))


def _data_key(dataset: str, data_root: str | os.PathLike, split: str) -> tuple[str, str]:
    """(data root, split-contents digest) of the data on disk, as an extraction keys them."""
    from featkit.cache import samples_digest
    from featkit.datasets import open_dataset

    ds = open_dataset(dataset, data_root)
    return ds.key_root(), samples_digest(ds.samples(split))


def find_files(
    model: str,
    dataset: str,
    split: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> list[Path]:
    """Usable cache files for (model, dataset, split), narrowed by weights/adapter identity and,
    with ``data_root``, to those whose key matches the data on disk there."""
    from extractors import canonical_id

    found = _matches(canonical_id(model), dataset, split, cache_dir=cache_dir, weights=weights,
                     adapter=adapter, data_root=data_root)
    return [path for path, _ in found.usable]


def load(
    model: str,
    dataset: str,
    split: str,
    kind: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> FeatureSet:
    """Load cached features of ``model`` on ``dataset``/``split``.

    With ``data_root`` (as given to ``featkit extract``) only a file whose key matches the data
    on disk there is used. When several files match, the newest is used and
    :attr:`FeatureSet.notes` names the others; corrupt or foreign files are skipped with a note.
    Nothing usable is a one-line :class:`~featkit.errors.CacheError` with the ``featkit
    extract`` command that makes (or rebuilds) the file.
    """
    from extractors import canonical_id

    found = _matches(canonical_id(model), dataset, split, cache_dir=cache_dir, weights=weights,
                     adapter=adapter, data_root=data_root)
    hint = _extract_command(model, dataset, split, cache_dir=cache_dir, weights=weights,
                            adapter=adapter, data_root=data_root)
    if not found.usable:
        raise CacheError(_nothing_usable(model, dataset, split, found, hint, cache_dir, data_root))
    candidates = found.usable
    if kind is not None:
        candidates = [c for c in candidates if _holds(c[1], kind)] or candidates
    candidates.sort(key=lambda c: (c[0].stat().st_mtime_ns, c[0].name))
    chosen, attrs = candidates[-1]
    notes = [f"skipped {path}: {problem}" for path, problem in found.broken]
    others = [str(path) for path, _ in found.usable if path != chosen]
    if others:
        why = ("they differ in preprocessing or extractor settings" if data_root is not None else
               "pass --data-root to use the one extracted from the data on disk there")
        notes.append(
            f"{len(others) + 1} cache files match {model} on {dataset}/{split}; using the newest, "
            f"{chosen} (created {attrs.get('created_at')}), not {', '.join(others)}; {why}, or "
            f"remove stale files with 'featkit cache prune'"
        )
    fs = _read(chosen, kind, f"rebuild it with '{hint}' (extract replaces corrupt files)")
    fs.notes = notes
    return fs


def _extract_command(model, dataset, split, *, cache_dir, weights, adapter, data_root) -> str:
    hint = f"featkit extract --model {model} --dataset {dataset} --splits {split}"
    for option, value in (("--data-root", data_root), ("--weights", weights),
                          ("--adapter", adapter), ("--cache-dir", cache_dir)):
        if value:
            hint += f" {option} {value}"
    return hint


def _nothing_usable(model, dataset, split, found: _Matches, hint: str, cache_dir, data_root) -> str:
    where = f"{model} on {dataset}/{split} under {cache_root(cache_dir)}"
    if found.broken:
        path, problem = found.broken[0]
        more = f" (and {len(found.broken) - 1} other unusable file(s))" if len(found.broken) > 1 else ""
        return f"no usable cached features for {where}: {path}: {problem}{more}; run: {hint} (it rebuilds the file)"
    if found.other_data:
        return (f"no cached features for {where} match the data under {data_root} "
                f"({len(found.other_data)} file(s) were extracted from other contents of the "
                f"dataset); run: {hint}")
    return f"no cached features for {where}; run: {hint}"
