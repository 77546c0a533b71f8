"""Phi-4-multimodal (``Phi4MultimodalForCausalLM``) through its own image embedding module.

The model has no ``get_image_features``: its base model's embedding layer
(``embed_tokens_extend.image_embed``, a ``Phi4MultimodalImageEmbedding``) runs the SigLIP tower
(no class token) on every crop, reads ``hidden_states[vision_config.feature_layer]`` (-2: the
second-to-last block's output, before the tower's post-layernorm), average-pools 2 x 2 patches,
lays the tokens out in the HD order and projects them (linear -> GELU -> linear), then
*replaces* the image-token embeddings of the prompt with them. The HD order of one image is:
the sub-images' tokens as one grid (``rows x cols`` sub-images of ``crop_size``, each
``n x n`` pooled tokens) with a ``sub_img_feature_extensor`` separator ending every row, one
``global_img_feature_extensor`` token, then the global image's ``n x n`` tokens with the same
row separator -- ``n*n*(rows*cols) + n*rows + 1 + n*n + n`` tokens, every one projected.

The route calls that module itself, on the prompt's embeddings, so the tokens are the model's
own, and reads the tower's block outputs with forward hooks during the same pass (one tower
pass for every kind).

Features (square input of ``image_size``, default twice the crop size: 2 x 2 sub-images plus
the global image; all patches are real, no padding, for a square of a multiple of the crop):

``visual``
    The tower's ``hidden_states[feature_layer]`` (1152-d for the released model, block 26 of
    27), mean over every patch of every crop -- the global image and each sub-image, each the
    same number of patches, padding patches (``image_attention_mask``) left out -- before the
    2 x 2 average pool and without the separators.
``aligned``
    Every image token the language model receives (sub-image grid with its row separators, the
    global separator, the global image with its row separators), projected, mean-pooled.
``patch_mean@L``
    The tower's ``hidden_states[L]`` over the same patches as ``visual``.

The released checkpoint's vision LoRA (``vision-lora/``, for the language model) is a peft
adapter: give it with ``--adapter <checkpoint>/vision-lora`` for the model as it answers about
images; without it the language model is the base one. The audio tower is never run.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from extractors.hf_image_routes import ImageRoute, mean_over
from extractors.layers import capture_blocks
from featkit.errors import FeatkitError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Phi4ImageOutput:
    """The embedding module's output for the prompt (``(B, L, D)``, the image tokens in place)
    and the tower's block outputs ``{hidden_states index: (B * crops, P, D)}``."""

    embeds: torch.Tensor
    hidden_states: Mapping[int, torch.Tensor]


class Phi4MultimodalImages(ImageRoute):
    """Phi-4-multimodal's image route: the model's image embedding module on the prompt."""

    def __init__(self, extractor: Any) -> None:
        super().__init__(extractor)
        vision = extractor.model.config.vision_config
        depth = extractor.tower.depth
        layer = int(vision.feature_layer)
        self.feature_layer = layer if layer >= 0 else depth + 1 + layer
        if not 1 <= self.feature_layer <= depth:
            raise FeatkitError(f"{extractor.spec.name}: vision feature_layer {layer} is not a block "
                               f"of the {depth}-block tower")
        self.image_token_id = int(vision.image_token_id)
        self.embedding = operator.attrgetter(extractor.arch.projector)(extractor.base)
        self.tower = operator.attrgetter(extractor.arch.vision)(extractor.base)
        self.image_positions: torch.Tensor | None = None

    def setup(self, prompt_inputs: Mapping[str, Any]) -> None:
        import torch

        extractor = self.extractor
        ids = prompt_inputs["input_ids"][:1].to(extractor.device)
        self.image_positions = ids[0] == self.image_token_id
        if not self.image_positions.any():
            raise FeatkitError(f"{extractor.spec.name}: the prompt has no image token")
        # transformers 5.24 installs its hidden-state hooks lazily, per model, on first request;
        # the base model installing after the tower did installs the tower's a second time (each
        # block then records twice and the embedding's hidden_states[feature_layer] is None). A
        # one-token text forward asking for hidden states installs them for the whole model once.
        with torch.inference_mode():
            extractor.base(input_ids=ids[:, :1], output_hidden_states=True, use_cache=False)

    def image_output(self, pixel_values: torch.Tensor, hidden: Sequence[int]) -> Phi4ImageOutput:
        extractor = self.extractor
        batch = pixel_values.shape[0]
        ids = extractor._prompt_ids.expand(batch, -1)
        blocks = sorted({index - 1 for index in {*hidden, self.feature_layer}})
        if blocks and blocks[0] < 0:
            raise FeatkitError(f"{extractor.spec.name}: hidden_states[0] (the patch embeddings) is not a layer kind")
        with capture_blocks(self.tower.encoder.layers, blocks) as captured:
            embeds = self.embedding(ids, extractor.base.get_input_embeddings()(ids),
                                    image_pixel_values=pixel_values.to(extractor.device, extractor.dtype),
                                    **self.batch_inputs(batch))
        return Phi4ImageOutput(embeds, {index + 1: captured[index] for index in blocks})

    def _patches(self, batch: int) -> torch.Tensor:
        """``(B, crops * P)``: the real (not padding) patches of every crop."""
        mask = self.batch_inputs(batch)["image_attention_mask"]
        return mask.reshape(batch, -1).bool()

    def pooled(self, output: Phi4ImageOutput, batch: int, requests: Mapping[str, tuple[str, int]]
               ) -> dict[str, torch.Tensor]:
        real = self._patches(batch)
        out = {"visual": mean_over(output.hidden_states[self.feature_layer], batch, real),
               "aligned": output.embeds[:, self.image_positions].mean(dim=1)}
        for kind, (_, index) in requests.items():
            out[kind] = mean_over(output.hidden_states[index + 1], batch, real)
        return out

    def inputs_output(self, kwargs: Mapping[str, Any]) -> Phi4ImageOutput:
        """The prompt embeddings of processor inputs with their image tokens in place, built
        before the language model's forward: inside a forward asked for hidden states the
        embedding's own tower call loses its feature layer (transformers 5.24 raises)."""
        extractor = self.extractor
        ids = kwargs["input_ids"]
        embeds = self.embedding(ids, extractor.base.get_input_embeddings()(ids),
                                image_pixel_values=kwargs[extractor.arch.pixel_key],
                                **{k: kwargs[k] for k in extractor.arch.image_inputs})
        return Phi4ImageOutput(embeds, {})

    def language_inputs(self, kwargs: dict[str, Any], image_output: Any) -> dict[str, Any]:
        """With ``image_output`` (the prompt's embeddings, image tokens in place) the base model
        takes them as ``inputs_embeds``, as its forward would build them; without, its forward
        runs the image embedding on the processor's inputs itself."""
        if image_output is None:
            return kwargs
        for key in ("input_ids", self.extractor.arch.pixel_key, *self.extractor.arch.image_inputs):
            kwargs.pop(key, None)
        kwargs["inputs_embeds"] = image_output.embeds
        return kwargs
