"""Dataset readers for official on-disk layouts, a registry, and root resolution."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from featkit._imports import import_present
from featkit.datasets.base import SPLITS, ImageDataset, Sample, carve_val
from featkit.errors import UnknownNameError, closest

__all__ = [
    "SPLITS",
    "ImageDataset",
    "Sample",
    "carve_val",
    "default_root",
    "list_datasets",
    "open_dataset",
    "register_dataset",
]

_READERS: dict[str, Callable[[Path], ImageDataset]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_MODULES = ("featkit.datasets.generic", "featkit.datasets.fine_grained", "featkit.datasets.torchvision_sets",
            "featkit.datasets.imagenet", "featkit.datasets.classic")
#: Datasets whose data ship with a package (no root needed).
BUNDLED = {"digits"}


def register_dataset(name: str, description: str = ""):
    """Class decorator: register an :class:`ImageDataset` subclass under ``name``."""

    def deco(cls):
        cls.name = name
        _READERS[name] = cls
        _DESCRIPTIONS[name] = description or (cls.__doc__ or "").strip().splitlines()[0]
        return cls

    return deco


def _import_readers() -> None:
    import_present(_MODULES)


def list_datasets() -> dict[str, str]:
    """Registered dataset names and one-line descriptions."""
    _import_readers()
    return dict(sorted(_DESCRIPTIONS.items()))


def default_root(name: str) -> Path:
    """``$FEATKIT_DATA/<name>`` if set, else ``./data/<name>``."""
    return Path(os.environ.get("FEATKIT_DATA", "data")) / name


def open_dataset(name: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """Open a registered dataset at ``root`` (default :func:`default_root`)."""
    _import_readers()
    if name not in _READERS:
        raise UnknownNameError(
            f"unknown dataset '{name}'{closest(name, list(_READERS))}; see 'featkit list datasets'"
        )
    path = Path(root) if root is not None else default_root(name)
    return _READERS[name](path)
