"""The extractor spec (data only) and the loaded-adapter interface every family implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image


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
    provenance), and implement :meth:`forward`.
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

    def key_settings(self) -> dict[str, Any]:
        """Settings beyond weights and preprocessing that change the features (part of the key):
        the adapter's ``_settings`` dict, plus the precision when it is not fp32."""
        settings = dict(getattr(self, "_settings", None) or {})
        if self.precision != "fp32":
            settings["precision"] = self.precision
        return settings

    def __call__(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.forward(images, kinds)


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
