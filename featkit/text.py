"""Text embeddings from the models that have a text side (the ``hf`` VLMs and their tiny twins).

Class-name prompts embedded here live in the same space as the images' ``last_token`` features
(same model, same last-token pooling, L2-normalised), for zero-shot classification and as InfoNCE
targets. A model supports text when its loaded extractor is an
:class:`extractors.base.TextEmbedder`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featkit.errors import FeatkitError, UnknownNameError


def embed_texts(
    model: str,
    texts: Sequence[str],
    *,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    instruction: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = False,
    extractor: Any = None,
) -> np.ndarray:
    """``(len(texts), D)`` float32 L2-normalised embeddings of ``texts`` by ``model``.

    Each text is embedded as ``"<instruction> <text>"`` (just the text when ``instruction`` is
    None, as VLM2Vec does for targets). ``extractor`` reuses an already-loaded model adapter
    (e.g. the one that extracted the image features); otherwise the model is loaded offline from
    ``weights``/the HF cache, with ``adapter`` applied.
    """
    if isinstance(texts, str):
        raise FeatkitError("embed_texts takes a list of texts, not one string; wrap it in a list")
    if batch_size < 1:
        raise FeatkitError("--batch-size must be positive")
    from extractors.base import TextEmbedder

    if extractor is None:
        from extractors import load_extractor
        from featkit._device import resolve_device

        device = resolve_device(device)
        if device == "cpu":
            precision = "fp32"
        extractor = load_extractor(model, weights=weights, adapter=adapter, device=device, precision=precision)
    if not isinstance(extractor, TextEmbedder):
        raise UnknownNameError(
            f"model {extractor.spec.name} has no text embeddings; text is supported for the hf "
            f"VLMs (LLaVA, Qwen2-VL) and test:tiny-llava / test:tiny-qwen2vl"
        )
    vectors = extractor.embed_texts(
        [str(t) for t in texts], instruction=instruction, batch_size=batch_size, progress=progress
    )
    return np.asarray(vectors, dtype=np.float32)


def read_texts(path: str | os.PathLike) -> list[str]:
    """Texts from a file: one per line (blank lines skipped), or a JSON list of strings."""
    import json

    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FeatkitError(f"cannot read texts from {path}: {err.strerror or err}") from None
    if path.suffix == ".json":
        try:
            texts = json.loads(content)
        except json.JSONDecodeError as err:
            raise FeatkitError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise FeatkitError(f"{path} must hold a JSON list of strings")
        return texts
    return [line.strip() for line in content.splitlines() if line.strip()]
