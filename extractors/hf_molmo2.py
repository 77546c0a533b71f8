"""Molmo2 (``Molmo2ForConditionalGeneration``) through its own ``get_image_features``.

Molmo2's image processor cuts a square image into overlapping crops (the canvas of
``tiling x tiling`` windows, neighbouring crops sharing ``overlap_margins`` patches) and puts a
low-resolution view of the whole image first; the tower (SigLIP2, no class token) runs on
every crop. ``get_image_features`` concatenates the tower's ``hidden_states`` at the adapter's
``vision_feature_layer`` (Molmo2's numbering: ``l >= 0`` is block ``l``'s output, i.e.
``hidden_states[l + 1]``; ``l < 0`` is ``hidden_states[l]``), gathers them by
``image_token_pooling`` -- windows of 2 x 2 patches, indices into the *whole batch's* flattened
patches, ``-1`` where a window runs past the image -- and pools each window with one
cross-attention query (their mean) before the MLP projector. The language model gets one token
per window, *added* to the ``<im_patch>`` token embedding at that position (a residual, not a
replacement); ``<im_start>``/``<im_col>``/``<im_end>`` structure tokens keep their embeddings.

Features (square input of ``image_size``, default twice the crop size: a 2 x 2 canvas of crops
plus the global view):

``visual``
    The configured layers concatenated (2 x 1152 = 2304-d for the released 4B/8B models, blocks
    25 and 19 of the trimmed 25-block tower), mean over exactly the patches the pooling reads:
    every patch of the global view and each canvas patch once (the overlap margins the processor
    drops are left out) -- the adapter's input, before the pooling cross-attention.
``aligned``
    The adapter's output (pooled, projected) for every window of the global view and the canvas,
    mean-pooled: what the language model adds to its ``<im_patch>`` embeddings.
``patch_mean@L``
    The tower's ``hidden_states[L]`` over the same patches as ``visual``.

The trap this route exists for: pooling indices of one image, repeated for a batch, would pool
the first image's patches for every image. :meth:`Molmo2Images.batch_inputs` offsets them by
each image's place in the batch, as the processor does for a list of images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from extractors.hf_image_routes import ImageRoute, mean_over
from featkit.errors import FeatkitError

if TYPE_CHECKING:
    import torch


class Molmo2Images(ImageRoute):
    """Molmo2's image route: ``get_image_features`` with batch-global pooling indices."""

    def __init__(self, extractor: Any) -> None:
        super().__init__(extractor)
        depth = extractor.tower.depth
        self.molmo_layers = list(extractor.model.config.adapter_config.vision_feature_layer)
        # hidden_states indices, 0 = the patch embeddings
        self.feature_layer = [layer + 1 if layer >= 0 else depth + 1 + layer for layer in self.molmo_layers]
        self.patches_per_image = 0
        self.used: torch.Tensor | None = None

    def setup(self, prompt_inputs: Mapping[str, Any]) -> None:
        import torch

        pixels = prompt_inputs["pixel_values"]  # (crops, P, p * p * C) of the one image
        self.patches_per_image = int(pixels.shape[0] * pixels.shape[1])
        pooling = prompt_inputs["image_token_pooling"]
        used = torch.zeros(self.patches_per_image, dtype=torch.bool)
        used[pooling[pooling >= 0].long()] = True
        if not used.any():
            raise FeatkitError(f"{self.extractor.spec.name}: the processor pools no patch of the image")
        self.used = used.to(self.extractor.device)

    def batch_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        """``image_token_pooling`` of ``batch`` images: image ``b``'s indices shifted by ``b``
        images' patches (padding ``-1`` kept); ``image_grids`` repeated."""
        import torch

        inputs = self.extractor._image_inputs
        pooling = inputs["image_token_pooling"]
        offsets = torch.arange(batch, device=pooling.device).view(-1, 1, 1) * self.patches_per_image
        shifted = torch.where(pooling >= 0, pooling.unsqueeze(0) + offsets.to(pooling.dtype), pooling)
        grids = inputs["image_grids"]
        return {"image_token_pooling": shifted.reshape(-1, pooling.shape[-1]),
                "image_grids": grids.repeat(batch, 1)}

    def image_output(self, pixel_values: torch.Tensor, hidden: Sequence[int]) -> Any:
        extractor = self.extractor
        if pixel_values.shape[1] * pixel_values.shape[2] != self.patches_per_image:
            raise FeatkitError(f"{extractor.spec.name}: images of {pixel_values.shape[1]} crops; "
                               f"the prompt was built for {self.patches_per_image} patches")
        wanted = sorted(set(hidden) | set(self.feature_layer))
        return extractor.base.get_image_features(
            pixel_values=pixel_values.to(extractor.device, extractor.dtype),
            **self.batch_inputs(pixel_values.shape[0]), output_hidden_states=wanted, return_dict=True)

    def pooled(self, output: Any, batch: int, requests: Mapping[str, tuple[str, int]]
               ) -> dict[str, torch.Tensor]:
        import torch

        states = torch.cat([output.hidden_states[index] for index in self.feature_layer], dim=-1)
        out = {"visual": mean_over(states, batch, self.used),
               "aligned": torch.stack([tokens.mean(dim=0) for tokens in output.pooler_output])}
        for kind, (_, index) in requests.items():
            out[kind] = mean_over(output.hidden_states[index + 1], batch, self.used)
        return out

    def inputs_output(self, kwargs: Mapping[str, Any]) -> Any:
        extractor = self.extractor
        return extractor.base.get_image_features(
            pixel_values=kwargs["pixel_values"],
            **{k: kwargs[k] for k in extractor.arch.image_inputs}, return_dict=True)
