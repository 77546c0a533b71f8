"""Reading cached features back: :class:`FeatureSet`, :func:`load` and :func:`load_file`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cache import FEATURES_GROUP, _decode_attrs, cache_root, slug
from featkit.errors import CacheError, UnknownNameError, closest


@dataclass
class FeatureSet:
    """One feature kind of one split: NumPy arrays plus the file's provenance in ``meta``."""

    features: np.ndarray
    labels: np.ndarray
    sample_ids: list[str]
    class_names: list[str]
    meta: dict[str, Any]
    kind: str
    path: Path

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
    """Read one feature kind (default: the model's first kind) from a cache file."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise CacheError(f"no cache file {path}")
    with h5py.File(path, "r") as handle:
        kinds = list(handle[FEATURES_GROUP].keys())
        meta = _decode_attrs(handle.attrs)
        if kind is None:
            preferred = meta.get("kinds") or kinds
            kind = preferred[0] if preferred else None
        if kind not in kinds:
            raise UnknownNameError(
                f"{path} has no feature kind '{kind}'{closest(str(kind), kinds)} (kinds: {', '.join(kinds)}); "
                f"extract it with --features {kind}"
            )
        dataset = handle[FEATURES_GROUP][kind]
        features = np.empty(dataset.shape, dtype=np.float32)
        if features.size:
            dataset.read_direct(features)
        labels = handle["labels"][()]
        sample_ids = [s.decode() if isinstance(s, bytes) else s for s in handle["sample_ids"][()]]
        class_names = [s.decode() if isinstance(s, bytes) else s for s in handle["class_names"][()]]
    return FeatureSet(features, labels.astype(np.int64), sample_ids, class_names, meta, kind, path)


def find_files(
    model: str,
    dataset: str,
    split: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
) -> list[Path]:
    """Complete cache files for (model, dataset, split), narrowed by weights/adapter identity."""
    from extractors import canonical_id
    from extractors.weights import weights_identity
    from featkit.cache import read_attrs

    model_id = canonical_id(model)
    folder = cache_root(cache_dir) / slug(model_id) / dataset
    # identities are memoised per process: a probe command's several loads hash the folder once
    wanted_weights = weights_identity(weights) if weights is not None else None
    wanted_adapter = weights_identity(adapter) if adapter is not None else None
    found = []
    for path in sorted(folder.glob(f"{split}-*.h5")):
        attrs = read_attrs(path)
        if wanted_weights is not None and attrs.get("weights") != wanted_weights:
            continue
        if (attrs.get("settings") or {}).get("adapter") != wanted_adapter:
            continue  # no adapter asked: only files extracted without one
        found.append(path)
    return found


def load(
    model: str,
    dataset: str,
    split: str,
    kind: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
) -> FeatureSet:
    """Load cached features of ``model`` on ``dataset``/``split``.

    Raises a one-line :class:`~featkit.errors.CacheError` when nothing matches (with the
    ``featkit extract`` command that makes it) or when several files match (pass ``weights``).
    """
    files = find_files(model, dataset, split, cache_dir=cache_dir, weights=weights, adapter=adapter)
    if not files:
        hint = f"featkit extract --model {model} --dataset {dataset} --splits {split}"
        if weights:
            hint += f" --weights {weights}"
        if adapter:
            hint += f" --adapter {adapter}"
        if cache_dir:
            hint += f" --cache-dir {cache_dir}"
        raise CacheError(f"no cached features for {model} on {dataset}/{split} under {cache_root(cache_dir)}; run: {hint}")
    if len(files) > 1:
        raise CacheError(
            f"{len(files)} cache files match {model} on {dataset}/{split} (different weights or "
            f"preprocessing): {', '.join(str(f) for f in files)}; pass weights=/--weights or load_file(path)"
        )
    return load_file(files[0], kind)
