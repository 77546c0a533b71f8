"""``pixels``: resized raw pixels, flattened — a parameter-free baseline every probe can run on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from extractors import register
from extractors.base import Extractor, ExtractorSpec, Family, Preprocessing
from extractors.transforms import build_transform

_SIZES = (8, 16, 32)


def _spec(size: int) -> ExtractorSpec:
    return ExtractorSpec(
        name=f"pixels:{size}",
        family="pixels",
        kinds={"visual": 3 * size * size},
        preprocessing=Preprocessing(size=size, resize_mode="squash", interpolation="bilinear"),
        weights="none",
        description=f"raw RGB pixels resized to {size}x{size}, flattened (values in [0, 1])",
    )


class PixelsExtractor(Extractor):
    def __init__(self, spec: ExtractorSpec, device: str) -> None:
        self.spec = spec
        self.preprocessing = spec.preprocessing.to_dict()
        self.transform = build_transform(spec.preprocessing)
        self.kinds = dict(spec.kinds)
        self.weights_identity = "none"
        self.device = device

    def forward(self, images, kinds: Sequence[str]):
        return {"visual": images.flatten(1)}

    def differentiable_features(self, kind: str):
        return self._feature_function(kind, self.forward)


@register
class PixelsFamily(Family):
    name = "pixels"

    def specs(self) -> list[ExtractorSpec]:
        return [_spec(s) for s in _SIZES]

    def resolve(self, name: str) -> ExtractorSpec:
        if name.isdigit() and 1 <= int(name) <= 512:
            return _spec(int(name))
        return super().resolve(name)

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32",
             options: Mapping[str, Any] | None = None):
        return PixelsExtractor(spec, device)

    def weights_available(self, spec) -> bool:
        return True
