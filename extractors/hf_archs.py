"""What each supported transformers VLM architecture needs beyond the common interface.

transformers 5 gives every image-text-to-text model the same calls: ``get_image_features``
(vision tower -> projector; the tower's ``hidden_states``/``last_hidden_state`` and the projected
tokens in ``pooler_output``) and a base-model forward that accepts those features back as
``mm_encoder_outputs``. :class:`~extractors.hf_vlm.HFVLMExtractor` drives any model through them;
an :class:`Architecture` entry only names where the parts are and how the model's inputs differ.
A model is matched by its config's ``architectures[0]`` (the ``*ForConditionalGeneration`` class).
Two architectures reach their image tokens another way, each through a named image route
(:data:`MOLMO2`, :data:`PHI4_MULTIMODAL`; :mod:`extractors.hf_molmo2`, :mod:`extractors.hf_phi4mm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: how a batch of transformed images reaches ``get_image_features``
IMAGE = "image"  # (B, C, H, W): one image per sample
TILES = "tiles"  # (B, T, C, H, W) with fixed T: any-resolution tiles (base image first)
FLAT = "flat"  # (B * P, C * t * p * p): Qwen's patchified pixels, P patches per image
PATCHES = "patches"  # (B, crops, P, p * p * C): Molmo2's patchified crops (global view first)

#: how ``last_token`` runs the language model
BASE_FORWARD = "base"  # the multimodal base model's forward with mm_encoder_outputs
LANGUAGE_MODEL = "language_model"  # image tokens scattered into the embeddings, then the LM alone

#: where ``visual`` comes from
FEATURE_LAYER = "feature_layer"  # hidden_states[config.vision_feature_layer], select strategy
LAST_HIDDEN = "last_hidden_state"  # the tower's last_hidden_state (what the projector receives)

#: how the image tokens are computed (the image route)
GET_IMAGE_FEATURES = "get_image_features"  # the model's get_image_features, images repeated per batch
MOLMO2 = "molmo2"  # get_image_features with batch-global pooling indices (extractors.hf_molmo2)
PHI4_MULTIMODAL = "phi4_multimodal"  # the model's image embedding module (extractors.hf_phi4mm)


@dataclass(frozen=True)
class Architecture:
    """One architecture: ``name`` (featkit's, in key settings), its ``model_class``; ``vision``,
    ``projector`` and ``language``: attribute paths from the base model (without the LM head) to
    the vision tower, the projector and the language model; ``pixels``: :data:`IMAGE`,
    :data:`TILES` or :data:`FLAT`; ``visual``: :data:`FEATURE_LAYER` or :data:`LAST_HIDDEN`;
    ``image_inputs`` / ``text_inputs``: the processor outputs besides ``pixel_values`` /
    ``input_ids``/``attention_mask`` that the model takes; ``flat_tiles``: the processor gives an
    image's tiles as a ``(tiles, C, H, W)`` batch and the model takes every image's tiles
    concatenated that way; ``last_layer_is_output``: feature layer -1 means the tower's
    ``last_hidden_state`` (after its final norm), as the model reads it; ``lm_route``:
    :data:`BASE_FORWARD` or :data:`LANGUAGE_MODEL` (models whose only forward ends in the LM
    head); ``image_token_in_prompt``: the prompt names the image with the processor's image
    token (else the processor puts the image tokens first itself); ``qformer``: the model has a
    Q-Former whose pooled query outputs are the kind ``qformer``; ``global_tile``: which
    tile is the whole image (its class token is ``cls``); ``mrope``: positions come from the
    model (multimodal RoPE), not from the attention mask; ``fixed_size``: images are cropped to a
    square of the ``image_size`` option first, so every image gives the same tokens (default
    :meth:`default_size`); ``base``: attribute of the base model on the loaded class (``""``: the
    class itself); ``images``: the image route (:data:`GET_IMAGE_FEATURES`, :data:`MOLMO2`,
    :data:`PHI4_MULTIMODAL`); ``pixel_key``: the processor output holding the pixels;
    ``description``: how ``featkit list models`` describes it."""

    name: str
    model_class: str
    vision: str
    projector: str
    language: str = "language_model"
    pixels: str = IMAGE
    visual: str = FEATURE_LAYER
    image_inputs: tuple[str, ...] = ()
    text_inputs: tuple[str, ...] = ()
    flat_tiles: bool = False
    last_layer_is_output: bool = False
    global_tile: int = 0
    lm_route: str = BASE_FORWARD
    image_token_in_prompt: bool = True
    qformer: bool = False
    mrope: bool = False
    fixed_size: bool = False
    base: str = "model"
    images: str = GET_IMAGE_FEATURES
    pixel_key: str = "pixel_values"
    description: str = ""

    @property
    def title(self) -> str:
        """The architecture's short human name (``LLaVA``, ``Qwen2-VL``...)."""
        return self.description.split(":")[0]

    def default_size(self, image_processor: Any, vision_config: Any) -> int | None:
        """The square size images are cropped to when the option is not given (fixed-size
        architectures), else None."""
        if not self.fixed_size:
            return None
        if self.pixels == FLAT:
            return DEFAULT_QWEN_IMAGE_SIZE
        size = vision_config.image_size
        tile = int(size[0] if isinstance(size, (list, tuple)) else size)
        if self.flat_tiles:
            return tile  # one tile: the processor's dynamic tiling keeps a tile-sized image whole
        return 2 * tile  # a 2 x 2 grid of tiles (Molmo2: crops; Phi-4-MM: sub-images) + the base image


DEFAULT_QWEN_IMAGE_SIZE = 448

_ARCHITECTURES = (
    Architecture("llava", "LlavaForConditionalGeneration", "vision_tower", "multi_modal_projector",
                 description="LLaVA: vision tower layer vision_feature_layer -> MLP projector"),
    Architecture("llava_next", "LlavaNextForConditionalGeneration", "vision_tower",
                 "multi_modal_projector", pixels=TILES, image_inputs=("image_sizes",),
                 fixed_size=True,
                 description="LLaVA-NeXT: any-resolution tiles (square input: 2x2 grid + base "
                             "image) -> MLP projector, tiles packed with newline tokens"),
    Architecture("llava_onevision", "LlavaOnevisionForConditionalGeneration", "vision_tower",
                 "multi_modal_projector", pixels=TILES, image_inputs=("image_sizes",),
                 fixed_size=True,
                 description="LLaVA-OneVision: SigLIP any-resolution tiles -> MLP projector, "
                             "tiles packed with newline tokens"),
    Architecture("internvl", "InternVLForConditionalGeneration", "vision_tower",
                 "multi_modal_projector", pixels=TILES, flat_tiles=True, last_layer_is_output=True,
                 global_tile=-1, fixed_size=True,
                 description="InternVL 2.5/3: InternViT -> pixel shuffle (0.5) -> MLP projector; "
                             "square input, one tile at the tower's size"),
    Architecture("idefics3", "Idefics3ForConditionalGeneration", "vision_model", "connector",
                 language="text_model", pixels=TILES, visual=LAST_HIDDEN,
                 image_inputs=("pixel_attention_mask",), global_tile=-1, fixed_size=True,
                 description="Idefics3: SigLIP tower on image tiles + the global image -> "
                             "pixel-shuffle connector"),
    Architecture("smolvlm", "SmolVLMForConditionalGeneration", "vision_model", "connector",
                 language="text_model", pixels=TILES, visual=LAST_HIDDEN,
                 image_inputs=("pixel_attention_mask",), global_tile=-1, fixed_size=True,
                 description="SmolVLM: the Idefics3 layout (SigLIP tiles + global image -> "
                             "pixel-shuffle connector)"),
    Architecture("paligemma", "PaliGemmaForConditionalGeneration", "vision_tower",
                 "multi_modal_projector", visual=LAST_HIDDEN, text_inputs=("token_type_ids",),
                 description="PaliGemma: SigLIP tower -> linear projector -> Gemma (prefix "
                             "attention over image and prompt)"),
    Architecture("blip_2", "Blip2ForConditionalGeneration", "vision_model",
                 "language_projection", language="language_model.model", visual=LAST_HIDDEN,
                 base="", lm_route=LANGUAGE_MODEL, image_token_in_prompt=False, qformer=True,
                 description="BLIP-2: EVA ViT -> Q-Former queries -> language projection -> OPT "
                             "(query tokens before the prompt)"),
    Architecture("qwen2_vl", "Qwen2VLForConditionalGeneration", "visual", "visual.merger",
                 pixels=FLAT, visual=LAST_HIDDEN, image_inputs=("image_grid_thw",),
                 text_inputs=("mm_token_type_ids",), mrope=True, fixed_size=True,
                 description="Qwen2-VL: ViT -> 2x2 PatchMerger (fixed square input)"),
    Architecture("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "visual", "visual.merger",
                 pixels=FLAT, visual=LAST_HIDDEN, image_inputs=("image_grid_thw",),
                 text_inputs=("mm_token_type_ids",), mrope=True, fixed_size=True,
                 description="Qwen2.5-VL: window-attention ViT -> 2x2 merger (fixed square input)"),
    Architecture("qwen3_vl", "Qwen3VLForConditionalGeneration", "visual", "visual.merger",
                 pixels=FLAT, visual=LAST_HIDDEN, image_inputs=("image_grid_thw",),
                 text_inputs=("mm_token_type_ids",), mrope=True, fixed_size=True,
                 description="Qwen3-VL: ViT -> 2x2 merger (+ DeepStack features into the LM; "
                             "fixed square input)"),
    Architecture("molmo2", "Molmo2ForConditionalGeneration", "vision_tower",
                 "multi_modal_projector", pixels=PATCHES,
                 image_inputs=("image_token_pooling", "image_grids"),
                 text_inputs=("mm_token_type_ids",), fixed_size=True, images=MOLMO2,
                 description="Molmo2: SigLIP2 tower on overlapping crops + the global view, two "
                             "layers concatenated -> 2x2 attention pooling -> MLP, added to the "
                             "patch-token embeddings"),
    Architecture("phi4_multimodal", "Phi4MultimodalForCausalLM",
                 "embed_tokens_extend.image_embed.img_processor",
                 "embed_tokens_extend.image_embed", pixels=TILES,
                 image_inputs=("image_sizes", "image_attention_mask"), fixed_size=True,
                 images=PHI4_MULTIMODAL, pixel_key="image_pixel_values",
                 description="Phi-4-multimodal: SigLIP tower (layer -2) on HD sub-images + the "
                             "global image -> 2x2 average pool -> separators -> MLP (inside the "
                             "embedding layer)"),
)
#: ``config.architectures[0]`` -> its entry
ARCHITECTURES: dict[str, Architecture] = {a.model_class: a for a in _ARCHITECTURES}


@dataclass(frozen=True)
class TowerShape:
    """A vision tower's depth and width, and whether its first token is a class token."""

    depth: int
    width: int
    has_cls: bool


#: vision config ``model_type`` -> (depth key, width key, class token)
_VISION_KEYS: dict[str, tuple[str, str, bool]] = {
    "clip_vision_model": ("num_hidden_layers", "hidden_size", True),
    "siglip_vision_model": ("num_hidden_layers", "hidden_size", False),
    "siglip2_vision_model": ("num_hidden_layers", "hidden_size", False),
    "qwen2_vl_vision": ("depth", "embed_dim", False),
    "qwen2_5_vl_vision": ("depth", "hidden_size", False),
    "qwen3_vl_vision": ("depth", "hidden_size", False),
    "internvl_vision": ("num_hidden_layers", "hidden_size", True),
    "idefics3_vision": ("num_hidden_layers", "hidden_size", False),
    "smolvlm_vision": ("num_hidden_layers", "hidden_size", False),
    "blip_2_vision_model": ("num_hidden_layers", "hidden_size", True),
    "molmo2_vision": ("num_hidden_layers", "hidden_size", False),
    "phi4_multimodal_vision": ("num_hidden_layers", "hidden_size", False),
}


def vision_shape(vision_config: Any) -> TowerShape | None:
    """The vision tower's shape from its config (None: a tower type featkit does not know)."""
    keys = _VISION_KEYS.get(vision_config.model_type)
    if keys is None:
        return None
    depth, width, has_cls = keys
    return TowerShape(int(getattr(vision_config, depth)), int(getattr(vision_config, width)), has_cls)


def vision_shape_from_json(vision_config: Mapping[str, Any]) -> TowerShape | None:
    """:func:`vision_shape` from a ``config.json``'s ``vision_config`` dict (no transformers)."""
    keys = _VISION_KEYS.get(vision_config.get("model_type", ""))
    if keys is None or keys[0] not in vision_config or keys[1] not in vision_config:
        return None
    depth, width, has_cls = keys
    return TowerShape(int(vision_config[depth]), int(vision_config[width]), has_cls)


def supported() -> str:
    """The supported classes, for error messages."""
    return ", ".join(ARCHITECTURES)
