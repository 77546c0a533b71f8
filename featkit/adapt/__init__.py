"""Contrastive (InfoNCE) adaptation of VLMs into embedding models with LoRA (VLM2Vec recipe).

``featkit adapt`` trains a peft LoRA adapter so that a VLM's last-token embedding of an image query
("<image> Represent the given image." or an image + question) matches the last-token embedding of
its target text (a class-name caption or the answer), with in-batch negatives. The adapter
directory it writes plugs straight back into ``featkit extract --adapter DIR`` and every probe.

Modules: :mod:`~featkit.adapt.loss` (InfoNCE, autograd-aware all-gather),
:mod:`~featkit.adapt.gradcache` (chunked large-batch gradients), :mod:`~featkit.adapt.data`
(JSONL pairs and caption/VQA builders), :mod:`~featkit.adapt.train` (the training loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featkit.adapt.config import AdaptConfig
    from featkit.adapt.data import PairSet, build_pairs, caption_pairs, read_pairs_jsonl, vqa_pairs
    from featkit.adapt.loss import info_nce
    from featkit.adapt.train import AdaptResult, adapt

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "PairSet",
    "adapt",
    "build_pairs",
    "caption_pairs",
    "info_nce",
    "read_pairs_jsonl",
    "vqa_pairs",
]

_LAZY = {
    "AdaptConfig": "featkit.adapt.config",
    "AdaptResult": "featkit.adapt.train",
    "adapt": "featkit.adapt.train",
    "PairSet": "featkit.adapt.data",
    "build_pairs": "featkit.adapt.data",
    "caption_pairs": "featkit.adapt.data",
    "info_nce": "featkit.adapt.loss",
    "read_pairs_jsonl": "featkit.adapt.data",
    "vqa_pairs": "featkit.adapt.data",
}


def __getattr__(name: str) -> Any:
    """Import lazily so that ``featkit --help`` does not import torch."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featkit.adapt' has no attribute {name!r}")
