"""The ``test`` family: tiny, seeded, randomly initialised models of real architecture families.

They run offline in seconds, so tests, ``featkit demo`` and the notebooks exercise the real
loading and feature code paths. Each family module registers its tiny models here with
:func:`register_tiny`. Their weights are random *by design* (weights identity ``random:seed<N>``).
Each tiny model declares the options (and adapter support) of the family it mimics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from extractors import register
from extractors.base import Extractor, ExtractorSpec, Family, OptionSpec

Loader = Callable[..., Extractor]


@dataclasses.dataclass(frozen=True)
class _Tiny:
    spec: ExtractorSpec
    loader: Loader
    options: tuple[OptionSpec, ...]
    accepts_adapter: bool


_TINY: dict[str, _Tiny] = {}


def register_tiny(
    spec: ExtractorSpec, mimics: type[Family], defaults: Mapping[str, Any] | None = None
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(spec, *, weights, adapter, device, precision, options)`` for
    ``spec``, a tiny model of family ``mimics`` (its options, with ``defaults`` overriding theirs,
    and its adapter support)."""
    if not spec.name.startswith("test:"):
        raise ValueError(f"tiny model ids start with 'test:', got {spec.name}")
    defaults = dict(defaults or {})
    options = tuple(dataclasses.replace(o, default=defaults.pop(o.name, o.default)) for o in mimics.options)
    if defaults:
        raise ValueError(f"{spec.name}: {mimics.name} declares no option {', '.join(defaults)}")

    def deco(loader: Loader) -> Loader:
        _TINY[spec.name] = _Tiny(spec, loader, options, mimics.accepts_adapter)
        return loader

    return deco


@register
class TinyFamily(Family):
    name = "test"

    def specs(self) -> list[ExtractorSpec]:
        return [tiny.spec for tiny in _TINY.values()]

    def options_for(self, spec: ExtractorSpec) -> tuple[OptionSpec, ...]:
        return _TINY[spec.name].options

    def accepts_adapter_for(self, spec: ExtractorSpec) -> bool:
        return _TINY[spec.name].accepts_adapter

    def adapter_models(self) -> list[str]:
        return [name for name, tiny in _TINY.items() if tiny.accepts_adapter]

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32", options=None):
        return _TINY[spec.name].loader(spec, weights=weights, adapter=adapter, device=device,
                                       precision=precision, options=dict(options or {}))

    def weights_available(self, spec) -> bool:
        return True
