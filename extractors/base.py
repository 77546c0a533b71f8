"""The extractor spec (data only), the options a family declares, and the loaded-adapter
interface every family implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from extractors.layers import KindDims, LayerSpan, split_kind
from featkit.errors import FeatkitError, UnknownNameError, closest

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

#: A differentiable map from normalised images ``(B, C, H, W)`` to ``(B, D)`` float features.
FeatureFn = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input: resize, crop and normalisation (recorded in the cache key)."""

    size: int
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize_mode: str = "shortest"  # "shortest" edge then centre crop, or "squash"
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class OptionSpec:
    """One extractor option a family accepts (``--option NAME=VALUE``, ``options={NAME: VALUE}``).

    ``type`` is ``int``, ``float``, ``str`` or ``bool``: values from the command line arrive as
    strings and are parsed by it. ``default`` (None: the family decides, e.g. from the checkpoint)
    is what the loader sees when the option is not given. ``changes_features``: whether the value
    changes the features, and so is part of the cache key.
    """

    name: str
    type: type
    default: Any = None
    changes_features: bool = True
    help: str = ""

    def parse(self, value: Any, model: str, accepted: str) -> Any:
        """``value`` as :attr:`type` (None: not given, the default); else a one-line error."""
        if value is None:
            return self.default
        parsed = _parse_value(self.type, value)
        if parsed is None:
            raise FeatkitError(
                f"option {self.name}={value!r} for {model}: expected {_TYPE_WORDS[self.type]}; "
                f"{model} accepts {accepted}"
            )
        return parsed

    def describe(self) -> str:
        """``name (type, default D)``: how error messages and listings name the option."""
        default = "" if self.default is None else f", default {self.default!r}"
        return f"{self.name} ({self.type.__name__}{default})"


def _parse_value(kind: type, value: Any) -> Any:
    """``value`` as ``kind``, or None when it is not one (no silent conversions of other types)."""
    if isinstance(value, str):
        text = value.strip()
        if kind is str:
            return value
        if kind is bool:
            lowered = text.lower()
            return True if lowered in _TRUE else False if lowered in _FALSE else None
        try:
            return kind(text)
        except ValueError:
            return None
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or kind is str:
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, (int, float)) else None


def describe_options(options: Sequence[OptionSpec]) -> str:
    """The accepted options in one line, for errors and ``featkit list models``."""
    return ", ".join(o.describe() for o in options) if options else "no options"


@dataclass(frozen=True)
class ExtractorSpec:
    """What a model is, apart from how it is loaded.

    ``kinds`` maps each feature kind (``visual``, ``aligned``, ``patch_mean``, ``last_token``...)
    to its dimension, or ``None`` when only loading the model tells. ``weights`` names the weights
    source: a pretrained tag or hub id, ``"random"`` for deliberately random test models, or
    ``"none"`` for parameter-free extractors. ``config`` is the family's own description of the
    model (library model name, tag, layout...), never user input (that is ``options``).
    ``layers`` maps each per-layer kind (``cls``, ``patch_mean``, ``last_token``) to the blocks it
    has (:class:`~extractors.layers.LayerSpan`); ``kinds`` then also answers lookups of the layer
    kinds ``cls@12``... (:class:`~extractors.layers.KindDims`).
    """

    name: str
    family: str
    kinds: Mapping[str, int | None]
    preprocessing: Preprocessing | None = None
    weights: str = "none"
    description: str = ""
    notes: str = ""
    default_kinds: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[str, LayerSpan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", KindDims(self.kinds, self.layers))

    @property
    def default_features(self) -> tuple[str, ...]:
        return self.default_kinds or tuple(self.kinds)


class Extractor:
    """A loaded model adapter: preprocessing plus a batch -> ``{kind: (B, D) tensor}`` forward.

    Subclasses set ``spec``, ``transform`` (PIL image -> tensor), ``kinds`` (resolved dims; a
    :class:`~extractors.layers.KindDims` where the model has layer kinds ``cls@12``...),
    ``weights_identity`` (tag or sha256 of the weights file) and ``preprocessing`` (a dict for
    provenance), and implement :meth:`forward`. Families whose features keep an autograd graph
    also implement :meth:`differentiable_features` (through :meth:`_feature_function`), so
    image-space attacks run through them without knowing the model's structure.
    """

    spec: ExtractorSpec
    transform: Callable[[Image.Image], torch.Tensor]
    kinds: dict[str, int]
    weights_identity: str
    preprocessing: dict[str, Any]
    device: str = "cpu"
    precision: str = "fp32"
    #: the applied adapter's identity (sha256), None when no adapter was applied
    adapter_identity: str | None = None
    #: family settings that change the features beyond weights and preprocessing (cache key)
    _settings: Mapping[str, Any] = MappingProxyType({})

    def forward(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def check_kinds(self, kinds: Sequence[str]) -> None:
        """One-line :class:`UnknownNameError` for a kind this loaded model does not give."""
        for kind in kinds:
            split_kind(kind)  # a malformed layer kind names the syntax
        unknown = [k for k in kinds if k not in self.kinds]
        if unknown:
            listed = (self.kinds.describe() if isinstance(self.kinds, KindDims)
                      else ", ".join(self.kinds))
            raise UnknownNameError(
                f"{self.spec.name} has no feature kind {', '.join(repr(k) for k in unknown)} "
                f"(kinds: {listed})"
            )

    def layer_depths(self) -> dict[str, int]:
        """Each per-layer kind's number of blocks (``{"cls": 12, "last_token": 28}``), where known:
        what lets a cache file answer ``cls@12`` with what it stored as ``cls@-1``."""
        if not isinstance(self.kinds, KindDims):
            return {}
        return {base: span.depth for base, span in self.kinds.layers.items() if span.depth}

    def differentiable_features(self, kind: str) -> FeatureFn:
        """Normalised images ``(B, C, H, W)`` -> ``(B, D)`` float features of ``kind``, with the
        autograd graph kept (model in eval mode, parameters frozen): what image-space attacks
        differentiate through. The base cannot: a one-line :class:`FeatkitError`."""
        self.check_kinds([kind])
        raise FeatkitError(
            f"image-space attacks are not supported for {self.spec.name} (its features are not "
            f"differentiable in the input images); use --space feature"
        )

    def pixel_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` per channel that :attr:`transform` normalises pixels in [0, 1] with,
        from the preprocessing the extractor was built with."""
        if "mean" not in self.preprocessing or "std" not in self.preprocessing:
            raise FeatkitError(f"{self.spec.name} declares no pixel mean/std in its preprocessing; "
                               f"image-space attacks need them")
        return (tuple(float(m) for m in self.preprocessing["mean"]),
                tuple(float(s) for s in self.preprocessing["std"]))

    def _feature_function(
        self, kind: str, forward_with_grad: Callable[[torch.Tensor, Sequence[str]], dict[str, torch.Tensor]]
    ) -> FeatureFn:
        """:meth:`differentiable_features` for a family's ``forward_with_grad(images, kinds)``."""
        self.check_kinds([kind])

        def features(images: torch.Tensor) -> torch.Tensor:
            return forward_with_grad(images, (kind,))[kind].float()

        return features

    def key_settings(self) -> dict[str, Any]:
        """Settings beyond weights and preprocessing that change the features (part of the key):
        the adapter's ``_settings`` dict, plus the precision when it is not fp32."""
        settings = dict(self._settings)
        if self.precision != "fp32":
            settings["precision"] = self.precision
        return settings

    def __call__(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.forward(images, kinds)


class TextEmbedder(Extractor):
    """An extractor with a text side: texts embedded in the space of its ``last_token`` features."""

    def embed_texts(
        self, texts: Sequence[str], *, instruction: str | None = None, batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """``(len(texts), D)`` float32 L2-normalised embeddings of ``"<instruction> <text>"``."""
        raise NotImplementedError


class AdaptableExtractor(TextEmbedder):
    """What contrastive (InfoNCE + LoRA) adaptation needs from an extractor.

    ``model``: the module LoRA wraps (its language model's linear layers sit under a
    ``language_model`` module); ``processor``: tokenizer and image processor, called as
    ``processor(text=..., images=..., padding=True, return_tensors="pt")``; ``image_token``: the
    prompt's image placeholder; ``square_crop_size``: the square images are cropped to before the
    processor (fixed-grid processors), or None; ``base_model_reference``: what an adapter's
    ``adapter_config.json`` names as its base model.
    """

    model: torch.nn.Module
    processor: Any
    image_token: str
    square_crop_size: int | None
    base_model_reference: str

    def last_token(
        self, inputs: Mapping[str, Any], *, image_output: Any = None, grad: bool = False
    ) -> torch.Tensor:
        """L2-normalised last-token embeddings of processor ``inputs`` (``grad``: keep the graph)."""
        raise NotImplementedError


class Family:
    """A model family: resolves ``family:name`` ids to specs and loads them.

    ``options`` declares the extractor options the family accepts and ``accepts_adapter`` whether
    it can apply a peft adapter (``--adapter``); :meth:`check_options` holds every load to them.
    Register subclasses with :func:`extractors.register`.
    """

    name: str = ""
    options: tuple[OptionSpec, ...] = ()
    accepts_adapter: bool = False

    def options_for(self, spec: ExtractorSpec) -> tuple[OptionSpec, ...]:
        """The options ``spec`` accepts (the family's; the ``test`` family's mimic others)."""
        return self.options

    def accepts_adapter_for(self, spec: ExtractorSpec) -> bool:
        """Whether ``spec`` can apply an adapter."""
        return self.accepts_adapter

    def adapter_models(self) -> list[str]:
        """How an error names what in this family takes adapters (none: empty)."""
        return [f"the {self.name} family"] if self.accepts_adapter else []

    def check_options(
        self, spec: ExtractorSpec, options: Mapping[str, Any] | None, *, adapter: Any = None,
        adapter_models: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Every declared option of ``spec``, parsed (given) or its default.

        An unknown option, a value that does not parse, or an adapter for a model that cannot
        apply one is a one-line :class:`FeatkitError` that lists what is accepted
        (``adapter_models``: the families and models that take adapters, for that message).
        """
        declared = {o.name: o for o in self.options_for(spec)}
        accepted = describe_options(tuple(declared.values()))
        if adapter and not self.accepts_adapter_for(spec):
            where = f"; adapters apply to {', '.join(adapter_models)}" if adapter_models else ""
            raise FeatkitError(f"--adapter {adapter}: {spec.name} cannot apply an adapter{where}")
        given = dict(options or {})
        for name in given:
            if name not in declared:
                raise FeatkitError(
                    f"unknown option '{name}' for {spec.name}{closest(name, list(declared))}; "
                    f"{spec.name} accepts {accepted}"
                )
        return {name: option.parse(given.get(name), spec.name, accepted) for name, option in declared.items()}

    def specs(self) -> list[ExtractorSpec]:
        """Specs to show in ``featkit list models`` (known or registered models)."""
        return []

    def resolve(self, name: str) -> ExtractorSpec:
        """The spec for ``name`` (the part of the id after ``family:``)."""
        for spec in self.specs():
            if spec.name == f"{self.name}:{name}":
                return spec
        known = [s.name for s in self.specs()]
        raise UnknownNameError(f"unknown model '{self.name}:{name}'{closest(f'{self.name}:{name}', known)}")

    def load(
        self,
        spec: ExtractorSpec,
        *,
        weights: str | None = None,
        adapter: str | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        options: Mapping[str, Any] | None = None,
    ) -> Extractor:
        """Load ``spec``; ``options`` are :meth:`check_options`' output (every declared option)."""
        raise NotImplementedError

    def weights_available(self, spec: ExtractorSpec) -> bool | None:
        """Whether the weights are available offline (None: unknown without loading)."""
        return None
