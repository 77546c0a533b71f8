"""featkit: extract, cache and probe image embeddings of vision and vision-language models.

Python API (NumPy arrays in, NumPy arrays out)::

    import featkit
    featkit.extract("test:tiny-clip", "digits")                    # fills the cache
    fs = featkit.load("test:tiny-clip", "digits", "test", "visual")
    fs.features, fs.labels, fs.sample_ids, fs.class_names, fs.meta
    featkit.run_suite("tiny")            # a whole benchmark matrix from a suite file (resumable)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featkit._version import __version__

if TYPE_CHECKING:
    from featkit.extraction import extract
    from featkit.featureset import FeatureSet, load, load_file
    from featkit.reporting import report
    from featkit.text import embed_texts

__all__ = ["FeatureSet", "__version__", "embed_texts", "extract", "load", "load_file", "report",
           "run_suite"]

_LAZY = {
    "extract": "featkit.extraction",
    "load": "featkit.featureset",
    "load_file": "featkit.featureset",
    "FeatureSet": "featkit.featureset",
    "embed_texts": "featkit.text",
    "report": "featkit.reporting",
    "run_suite": "featkit.suite",
}
_SUBMODULES = {"plots", "analysis", "reporting", "results", "stats", "suite", "tasks"}


def __getattr__(name: str) -> Any:
    """Import the API lazily so ``import featkit`` (and ``featkit --help``) stays instant."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"featkit.{name}")
    raise AttributeError(f"module 'featkit' has no attribute {name!r}")
