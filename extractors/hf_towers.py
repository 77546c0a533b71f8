"""Image-text dual encoders through transformers (family ``hf``): CLIP, SigLIP and SigLIP2
(``hf:openai/clip-vit-large-patch14``, ``hf:google/siglip2-so400m-patch14-384``...).

Feature kinds, all from one vision-model pass:

``visual``
    The vision model's ``pooler_output``: CLIP's post-layernormed class token (before the
    image-text projection); SigLIP's attention-pooling head output.
``aligned``
    ``get_image_features``: CLIP's ``visual_projection`` of ``visual``; SigLIP has no separate
    projection, so ``aligned`` *is* ``visual`` (said in the spec's notes).
``patch_mean`` / ``cls``
    The mean of ``last_hidden_state``'s patch tokens (CLIP: the encoder output before
    ``post_layernorm``, class token excluded; SigLIP: after it) / CLIP's raw class token.
``cls@L`` / ``patch_mean@L``
    The same pooling of the tower's ``hidden_states[L]`` (as stored, no norm): CLIP's
    ``cls@-1`` is ``cls`` and ``patch_mean@-1`` is ``patch_mean``.

SigLIP2's NaFlex checkpoints (``Siglip2Model``) take patchified pixels of a variable patch
grid; featkit crops images to a square first (option ``image_size``, default the side that
fills ``max_num_patches``), so every image has the same grid. CLIP and SigLIP take normalised
pixel tensors, so image-space attacks run through them.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from extractors.base import Extractor, ExtractorSpec
from extractors.hf_archs import vision_shape
from extractors.hf_vlm import ImageTransform, square_crop
from extractors.layers import KindDims, LayerSpan, layer_requests
from featkit.errors import FeatkitError, UnknownNameError


@dataclass(frozen=True)
class TowerArchitecture:
    """One dual-encoder class: ``projection`` the attribute holding the image-text projection
    (None: the pooled feature is the embedding), ``naflex`` patchified variable-grid input with
    ``pixel_attention_mask`` and ``spatial_shapes``."""

    name: str
    model_class: str
    projection: str | None
    naflex: bool = False
    description: str = ""


_TOWERS = (
    TowerArchitecture("clip", "CLIPModel", "visual_projection",
                      description="CLIP: ViT class token -> post-layernorm -> visual projection"),
    TowerArchitecture("siglip", "SiglipModel", None,
                      description="SigLIP / fixed-resolution SigLIP2: ViT -> attention-pool head"),
    TowerArchitecture("siglip2", "Siglip2Model", None, naflex=True,
                      description="SigLIP2 NaFlex: ViT on a variable patch grid -> attention-pool head"),
)
#: ``config.architectures[0]`` -> its entry
TOWER_ARCHITECTURES: dict[str, TowerArchitecture] = {t.model_class: t for t in _TOWERS}
NAFLEX_INPUTS = ("pixel_attention_mask", "spatial_shapes")


class HFTowerExtractor(Extractor):
    """A loaded transformers dual encoder's vision side: ``visual``, ``aligned``, ``patch_mean``,
    ``cls`` (CLIP) and the layer kinds, one vision-model pass per batch."""

    def __init__(self, spec: ExtractorSpec, model: Any, image_processor: Any, *,
                 architecture: TowerArchitecture, weights_identity: str,
                 adapter_identity: str | None = None, device: str = "cpu", precision: str = "fp32",
                 image_size: int | None = None) -> None:
        self.spec = spec
        self.model = model
        self.arch = architecture
        self.vision = model.vision_model
        self.projection = (operator.attrgetter(architecture.projection)(model)
                           if architecture.projection else None)
        self.image_processor = image_processor
        self.weights_identity = weights_identity
        self.adapter_identity = adapter_identity
        self.device = str(device)
        self.precision = precision
        self.dtype = next(model.parameters()).dtype
        self.tower = vision_shape(model.config.vision_config)
        if self.tower is None:
            raise UnknownNameError(f"{spec.name}: featkit does not know its vision tower type "
                                   f"{model.config.vision_config.model_type!r}")
        width = self.tower.width
        aligned = int(self.projection.out_features) if self.projection is not None else width
        dims = {"visual": width, "aligned": aligned, "patch_mean": width}
        span = LayerSpan(self.tower.depth, width)
        layers = {"patch_mean": span}
        if self.tower.has_cls:
            dims, layers = {**dims, "cls": width}, {"cls": span, **layers}
        self.kinds = KindDims(dims, layers)
        self.square_crop_size = None
        if architecture.naflex:
            self.square_crop_size = image_size or _naflex_side(image_processor)
        elif image_size is not None:
            raise FeatkitError(f"option image_size={image_size}: {spec.name} is a "
                               f"{architecture.model_class}, whose image processor fixes its input "
                               f"size (the option is for NaFlex SigLIP2 and dynamic-resolution VLMs)")
        self.transform = ImageTransform(image_processor, fixed_size=self.square_crop_size)
        self.preprocessing = {**json.loads(image_processor.to_json_string()),
                              "featkit_square_crop": self.square_crop_size}
        self._image_inputs = {}
        if architecture.naflex:
            from PIL import Image

            dummy = square_crop(Image.new("RGB", (8, 8)), self.square_crop_size)
            out = image_processor(images=dummy, return_tensors="pt")
            self._image_inputs = {k: out[k].to(self.device) for k in NAFLEX_INPUTS}

    def key_settings(self) -> dict[str, Any]:
        return {"adapter": self.adapter_identity,
                "pooling": "visual: the vision model's pooler_output; patch_mean: last_hidden_state"}

    def pixel_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (tuple(float(m) for m in self.image_processor.image_mean),
                tuple(float(s) for s in self.image_processor.image_std))

    def forward(self, images, kinds: Sequence[str]):
        import torch

        self.check_kinds(kinds)
        with torch.inference_mode():
            return self._forward_with_grad(images, kinds)

    def differentiable_features(self, kind: str):
        if self.arch.naflex:
            return super().differentiable_features(kind)
        return self._feature_function(kind, self._forward_with_grad)

    def _forward_with_grad(self, images, kinds: Sequence[str]):
        requests = layer_requests(kinds, self.kinds.layers)
        batch = images.shape[0]
        kwargs = {k: v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in self._image_inputs.items()}
        if requests:
            kwargs["output_hidden_states"] = sorted({index + 1 for _, index in requests.values()})
        output = self.vision(pixel_values=images.to(self.device, self.dtype), **kwargs,
                             return_dict=True)
        start = 1 if self.tower.has_cls else 0
        out = {"visual": output.pooler_output}
        if "aligned" in kinds:
            out["aligned"] = (self.projection(output.pooler_output) if self.projection is not None
                              else output.pooler_output)
        out["patch_mean"] = self._patch_mean(output.last_hidden_state, start)
        if self.tower.has_cls:
            out["cls"] = output.last_hidden_state[:, 0]
        for kind, (base, index) in requests.items():
            states = output.hidden_states[index + 1]
            out[kind] = states[:, 0] if base == "cls" else self._patch_mean(states, start)
        return {k: out[k] for k in kinds}

    def _patch_mean(self, states, start: int):
        """Mean over the patch tokens (NaFlex: the real ones, by the pixel attention mask)."""
        tokens = states[:, start:]
        mask = self._image_inputs.get("pixel_attention_mask")
        if mask is None:
            return tokens.mean(dim=1)
        weights = mask[:1].to(tokens.dtype).unsqueeze(-1)
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1)


def _naflex_side(image_processor: Any) -> int:
    """The square side (pixels) whose patch grid fills ``max_num_patches``."""
    return int(image_processor.patch_size) * math.isqrt(int(image_processor.max_num_patches))
