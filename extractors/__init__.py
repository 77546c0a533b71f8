"""Model adapters: a registry of families, ids ``family:name`` and friendly aliases.

Heavy libraries (open_clip, timm, transformers) are imported inside loaders only, so that
importing this package (and ``featkit --help``) stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extractors.base import Extractor, ExtractorSpec, Family, Preprocessing
from featkit._imports import import_present

__all__ = [
    "ALIASES",
    "Extractor",
    "ExtractorSpec",
    "Family",
    "Preprocessing",
    "canonical_id",
    "families",
    "get_spec",
    "load_extractor",
    "register",
    "resolve_alias",
]

_FAMILIES: dict[str, Family] = {}
_MODULES = ("extractors.tiny", "extractors.pixels", "extractors.open_clip", "extractors.timm", "extractors.hf")

#: Friendly names -> model ids.
ALIASES: dict[str, str] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: register a :class:`Family` under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no family name")
    _FAMILIES[cls.name] = cls()
    return cls


def add_alias(alias: str, model_id: str) -> None:
    ALIASES[alias] = model_id


def _import_families() -> None:
    import_present(_MODULES)


def families() -> dict[str, Family]:
    _import_families()
    return dict(_FAMILIES)


def resolve_alias(model: str) -> str:
    _import_families()
    return ALIASES.get(model, model)


def canonical_id(model: str) -> str:
    """The canonical ``family:name`` id of a model id or alias."""
    return get_spec(model).name


def get_spec(model: str) -> ExtractorSpec:
    """Resolve an id or alias to its spec; unknown names raise a one-line error with suggestions."""
    from featkit.errors import UnknownNameError, closest

    fams = families()
    model_id = resolve_alias(model)
    family_name, sep, name = model_id.partition(":")
    if not sep or family_name not in fams:
        known = list(ALIASES) + [s.name for f in fams.values() for s in f.specs()]
        raise UnknownNameError(
            f"unknown model '{model}'{closest(model, known)}; ids look like family:name "
            f"(families: {', '.join(sorted(fams))}); see 'featkit list models'"
        )
    return fams[family_name].resolve(name)


def load_extractor(
    model: str,
    *,
    weights: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
) -> Extractor:
    """Load a model adapter by id or alias (``weights``: local file or directory)."""
    spec = get_spec(model)
    family = families()[spec.family]
    return family.load(spec, weights=weights, device=device, precision=precision, options=options or {})
