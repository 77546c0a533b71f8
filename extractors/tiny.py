"""The ``test`` family: tiny, seeded, randomly initialised models of real architecture families.

They run offline in seconds, so tests, ``featkit demo`` and the notebooks exercise the real
loading and feature code paths. Each family module registers its tiny models here with
:func:`register_tiny`. Their weights are random *by design* (weights identity ``random:seed<N>``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from extractors import register
from extractors.base import Extractor, ExtractorSpec, Family

Loader = Callable[..., Extractor]
_TINY: dict[str, tuple[ExtractorSpec, Loader]] = {}


def register_tiny(spec: ExtractorSpec) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(spec, *, weights, device, precision, options)`` for ``spec``."""
    if not spec.name.startswith("test:"):
        raise ValueError(f"tiny model ids start with 'test:', got {spec.name}")

    def deco(loader: Loader) -> Loader:
        _TINY[spec.name] = (spec, loader)
        return loader

    return deco


@register
class TinyFamily(Family):
    name = "test"

    def specs(self) -> list[ExtractorSpec]:
        return [spec for spec, _ in _TINY.values()]

    def load(self, spec, *, weights=None, device="cpu", precision="fp32", options: Mapping[str, Any] | None = None):
        _, loader = _TINY[spec.name]
        return loader(spec, weights=weights, device=device, precision=precision, options=options or {})

    def weights_available(self, spec) -> bool:
        return True
