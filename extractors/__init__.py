"""Model adapters: a registry of families, ids ``family:name`` and friendly aliases.

Heavy libraries (open_clip, timm, transformers) are imported inside loaders only, so that
importing this package (and ``featkit --help``) stays instant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from extractors.base import (
    AdaptableExtractor,
    Extractor,
    ExtractorSpec,
    Family,
    OptionSpec,
    Preprocessing,
    TextEmbedder,
)
from featkit._device import resolve_device
from featkit._imports import import_present

__all__ = [
    "ALIASES",
    "AdaptableExtractor",
    "Extractor",
    "ExtractorSpec",
    "Family",
    "OptionSpec",
    "Preprocessing",
    "TextEmbedder",
    "adapter_models",
    "canonical_id",
    "check_options",
    "families",
    "get_spec",
    "layer_features",
    "load_extractor",
    "register",
    "resolve_alias",
]

_FAMILIES: dict[str, Family] = {}
#: the family modules; ``extractors.tiny`` (the ``test`` family) builds on the others
_MODULES = ("extractors.pixels", "extractors.open_clip", "extractors.timm", "extractors.hf", "extractors.tiny")

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


def adapter_models() -> list[str]:
    """The families (``the hf family``) and test models (``test:tiny-llava``) that take adapters."""
    return [name for family in families().values() for name in family.adapter_models()]


def check_options(
    model: str | ExtractorSpec,
    options: Mapping[str, Any] | None = None,
    *,
    adapter: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every option ``model`` declares, parsed from ``options`` (strings from the command line, or
    Python values) or at its default; an unknown option, an unparsable value or an adapter the
    model cannot apply is a one-line :class:`~featkit.errors.FeatkitError` listing what is
    accepted."""
    spec = model if isinstance(model, ExtractorSpec) else get_spec(model)
    family = families()[spec.family]
    models = adapter_models() if adapter and not family.accepts_adapter_for(spec) else ()
    return family.check_options(spec, options, adapter=adapter, adapter_models=models)


def layer_features(model: str | ExtractorSpec, layers: str | Sequence[int],
                   features: Sequence[str] | None = None) -> list[str]:
    """The feature kinds of ``--features`` (None: the model's defaults) plus the layer kinds of
    ``--layers`` (``"all"`` or block numbers such as ``"-1,-2,12"``): ``cls@L`` and
    ``patch_mean@L`` of the vision tower and ``last_token@L`` of a VLM's language model, for
    every per-layer kind the model has (see :mod:`extractors.layers`)."""
    from extractors.layers import expand_layers, parse_layers

    spec = model if isinstance(model, ExtractorSpec) else get_spec(model)
    kinds = list(features) if features else list(spec.default_features)
    extra = expand_layers(spec.layers, parse_layers(layers), model=spec.name)
    return kinds + [kind for kind in extra if kind not in kinds]


def load_extractor(
    model: str,
    *,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
) -> Extractor:
    """Load a model adapter by id or alias, offline.

    ``weights``: a local file or directory; ``adapter``: a peft adapter directory (families that
    declare ``accepts_adapter``); ``options``: the family's declared options (see
    :func:`check_options`).
    """
    spec = get_spec(model)
    adapter = str(adapter) if adapter else None
    parsed = check_options(spec, options, adapter=adapter)
    return families()[spec.family].load(
        spec, weights=str(weights) if weights else None, adapter=adapter,
        device=resolve_device(device), precision=precision, options=parsed,
    )
