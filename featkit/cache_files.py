"""Is a finished cache file usable? Its name against its key, its structure, its checksums.

Every reader of the cache asks :func:`check_file` (or :func:`inspect_file`, which also returns
the attributes) before trusting a file: a truncated, corrupt or foreign file (another model's
file under this model's name) is one line, and ``featkit extract`` rebuilds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cache import CHUNK_BYTES, FEATURES_GROUP, _decode_attrs, key_digest, slug

#: a cache file's name: ``<split>-<key digest>.h5``
_FILE_NAME = re.compile(r"^(?P<split>.+)-(?P<key>[0-9a-f]{16})\.h5$")


def named_key(path: Path) -> str | None:
    """The key digest a cache file's name claims, or None for a name featkit did not give."""
    match = _FILE_NAME.match(path.name)
    return match["key"] if match else None


def check_file(path: Path, *, data: bool = False) -> str | None:
    """Why ``path`` is not a usable cache file, in a few words (one line), or None.

    Always checked (cheap): the file opens (a truncated one does not), holds what featkit
    writes with rows that agree, and is the file its name and folder claim: its ``key``
    attribute is the digest in its name and the digest of its ``key_fields``, and its model,
    dataset and split are the folders' (another key's file put under this name is *foreign*).
    With ``data`` every dataset is read, so the fletcher32 checksums catch flipped bytes.
    """
    return inspect_file(path, data=data)[1]


def inspect_file(path: Path, *, data: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """``(attributes, problem)`` of a cache file: :func:`check_file`'s problem (None when the
    file is usable) and its decoded attributes (None when they cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs = _decode_attrs(handle.attrs)
            problem = _structure_problem(handle, attrs)
            if problem is None and data:
                problem = _data_problem(handle)
    except OSError as err:
        return None, f"unreadable or truncated ({h5py_reason(err)})"
    return attrs, problem or _key_problem(path, attrs)


def h5py_reason(err: BaseException) -> str:
    """h5py's error message on one short line."""
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _structure_problem(handle, attrs: Mapping[str, Any]) -> str | None:
    missing = [n for n in (FEATURES_GROUP, "labels", "sample_ids", "class_names") if n not in handle]
    if missing:
        return f"not a featkit cache file (no {', '.join(missing)})"
    n = handle["labels"].shape[0] if handle["labels"].shape else -1
    for kind, dataset in handle[FEATURES_GROUP].items():
        if len(dataset.shape) != 2 or dataset.shape[0] != n:
            return f"inconsistent: features/{kind} has shape {dataset.shape} for {n} labels"
    if handle["sample_ids"].shape != (n,) or attrs.get("n", n) != n:
        return f"inconsistent: {n} labels, {handle['sample_ids'].shape[0]} sample ids, n={attrs.get('n')}"
    return None


def _data_problem(handle) -> str | None:
    """Read every dataset (in blocks of about :data:`CHUNK_BYTES`); a checksum or decoding
    failure names the dataset."""
    numeric = [(f"{FEATURES_GROUP}/{k}", v) for k, v in handle[FEATURES_GROUP].items()]
    numeric.append(("labels", handle["labels"]))
    for name, dataset in numeric:
        row_bytes = max(1, int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize)
        step = max(1, CHUNK_BYTES // row_bytes)
        try:
            for start in range(0, dataset.shape[0], step):
                dataset[start : start + step]
        except OSError as err:
            return f"corrupt data in {name} ({h5py_reason(err)})"
    for name in ("sample_ids", "class_names"):
        try:
            handle[name].asstr()[()]
        except (OSError, UnicodeDecodeError) as err:
            return f"corrupt data in {name} ({h5py_reason(err)})"
    return None


def _key_problem(path: Path, attrs: Mapping[str, Any]) -> str | None:
    claimed = named_key(path)
    if claimed is None:
        return None  # a file the user named: nothing to compare its contents with
    stored, fields = attrs.get("key"), attrs.get("key_fields")
    what = f"{attrs.get('model')} features of {attrs.get('dataset')}/{attrs.get('split')}"
    if stored != claimed:
        return f"foreign: it holds {what} (key {stored}), not the key {claimed} its name claims"
    if not isinstance(fields, dict) or key_digest(fields) != stored:
        return "foreign: its key fields do not hash to its key (attributes edited or corrupt)"
    where = (path.parent.parent.name, path.parent.name, _FILE_NAME.match(path.name)["split"])
    if where != (slug(str(attrs.get("model"))), attrs.get("dataset"), attrs.get("split")):
        return f"foreign: it holds {what}, not the model, dataset and split of its folder and name"
    return None


def file_kinds(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as handle:
        return list(handle[FEATURES_GROUP].keys())
