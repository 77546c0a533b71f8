"""The extractor spec (data only) and the loaded-adapter interface every family implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featkit.errors import FeatkitError, UnknownNameError

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


@dataclass(frozen=True)
class ExtractorSpec:
    """What a model is, apart from how it is loaded.

    ``kinds`` maps each feature kind (``visual``, ``aligned``, ``patch_mean``, ``last_token``...)
    to its dimension, or ``None`` when only loading the model tells. ``weights`` names the weights
    source: a pretrained tag or hub id, ``"random"`` for deliberately random test models, or
    ``"none"`` for parameter-free extractors.
    """

    name: str
    family: str
    kinds: Mapping[str, int | None]
    preprocessing: Preprocessing | None = None
    weights: str = "none"
    description: str = ""
    notes: str = ""
    default_kinds: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def default_features(self) -> tuple[str, ...]:
        return self.default_kinds or tuple(self.kinds)


class Extractor:
    """A loaded model adapter: preprocessing plus a batch -> ``{kind: (B, D) tensor}`` forward.

    Subclasses set ``spec``, ``transform`` (PIL image -> tensor), ``kinds`` (resolved dims),
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

    def forward(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def check_kinds(self, kinds: Sequence[str]) -> None:
        """One-line :class:`UnknownNameError` for a kind this loaded model does not give."""
        unknown = [k for k in kinds if k not in self.kinds]
        if unknown:
            raise UnknownNameError(
                f"{self.spec.name} has no feature kind {', '.join(repr(k) for k in unknown)} "
                f"(kinds: {', '.join(self.kinds)})"
            )

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
        settings = dict(getattr(self, "_settings", None) or {})
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

    Register subclasses with :func:`extractors.register`.
    """

    name: str = ""

    def specs(self) -> list[ExtractorSpec]:
        """Specs to show in ``featkit list models`` (known or registered models)."""
        return []

    def resolve(self, name: str) -> ExtractorSpec:
        """The spec for ``name`` (the part of the id after ``family:``)."""
        for spec in self.specs():
            if spec.name == f"{self.name}:{name}":
                return spec
        from featkit.errors import UnknownNameError, closest

        known = [s.name for s in self.specs()]
        raise UnknownNameError(f"unknown model '{self.name}:{name}'{closest(f'{self.name}:{name}', known)}")

    def load(
        self,
        spec: ExtractorSpec,
        *,
        weights: str | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        options: Mapping[str, Any] | None = None,
    ) -> Extractor:
        raise NotImplementedError

    def weights_available(self, spec: ExtractorSpec) -> bool | None:
        """Whether the weights are available offline (None: unknown without loading)."""
        return None
