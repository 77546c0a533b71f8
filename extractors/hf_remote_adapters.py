"""The remote-code adapter type (:class:`RemoteCodeAdapter`, its fields described in
:mod:`extractors.hf_remote`, which registers :data:`SHIPPED` on import) and the adapters of the
real remote-code VLMs,
each written against the model's published modelling code and checked on a tiny model with the
same module layout (``tests/extractors/remote_code/``). Per model, what the kinds are:

Qwen-VL-Chat (``model_type`` ``"qwen"``; ``transformer.visual``, a ViT-bigG whose forward ends in
a 256-query cross-attention resampler ``attn_pool``, ``ln_post`` and ``proj``)
    ``visual``: the ViT's patch tokens (the resampler's input), mean-pooled; ``aligned``: the
    256 resampled tokens ``visual(images)`` returns; prompt ``<img>`` + 256 x ``<imgpad>`` +
    ``</img>`` (the positions its forward fills); 448 px squashed, bicubic, CLIP mean/std (its
    ``visual.image_transform``). Its ``QWenLMHeadModel`` casts itself by the config's
    ``bf16``/``fp16``/``fp32`` flags whatever dtype it is loaded in (none set, as Qwen-VL-Chat's:
    bf16 on a bf16 GPU; Qwen-VL-Chat-Int4's: fp16), so the flags are set from featkit's precision.
    Checked against the hub code (modeling_qwen, visual, tokenization_qwen with its real
    ``qwen.tiktoken``) on a tiny random checkpoint: pixels, visual, aligned, last_token equal.
InternVL-Chat (``"internvl_chat"``: V1.1 and the later remote checkpoints of the same code)
    ``visual``: InternViT's tokens at ``config.select_layer`` (-1: ``last_hidden_state``), CLS
    dropped, before the pixel shuffle; ``aligned``: ``extract_feature`` (pixel shuffle by
    ``downsample_ratio``, ``mlp1``); prompt ``<img>`` + ``<IMG_CONTEXT>`` x N + ``</img>``;
    one 448 px tile: the whole image resized to the square, bicubic (what OpenGVLab's
    ``dynamic_preprocess`` with one tile and ``build_transform`` do; checked against that code),
    ImageNet mean/std.
CogVLM2 (``"cogvlm2"``; the hub's ``config.json`` names no ``model_type``, so it is recognised
by its architecture, ``CogVLMForCausalLM``; ``model.vision``, EVA2-CLIP-E)
    ``visual``: the EVA transformer's patch tokens (CLS dropped), mean-pooled; ``aligned``:
    ``vision(images)``: 2 x 2 conv, GLU ``linear_proj``, ``boi``/``eoi`` around them (GLM-4V's
    variant of this code also divides by ``scaling_factor``), every token the language model
    receives; prompt BOS + pad x N (token
    type VISION, CogVLM2's ``build_conversation_input_ids``), its visual expert routed by
    ``token_type_ids`` and its position rule (the image's inner tokens share one position);
    1344 px squashed, CLIP mean/std.
Phi-3.5-V (``"phi3_v"``: microsoft/Phi-3.5-vision-instruct, TIGER-Lab/VLM2Vec-Full)
    The image's centre square (at the image's own resolution) is resized to ``g x 336`` px
    (``g = isqrt(num_crops)``), bilinear, which is what the processor's ``HD_transform`` does to a
    square image (checked against VLM2Vec's ``Phi3VImageProcessor``: equal for square images; a
    non-square one is the processor's result for its centre square, not the processor's
    aspect-keeping white-padded layout, whose grid varies with the aspect), and cut into a global
    336 px image plus ``g x g`` crops (crops are not padded to ``num_crops + 1``: the model drops
    padding crops itself).
    ``visual``: CLIP ViT-L/14-336's ``hidden_states[layer_idx]`` (-2) patch tokens over every crop,
    mean-pooled; ``aligned``: ``hd_feature_transform`` (2 x 2 merge, ``sub_GN`` row separators,
    ``glb_GN``, ``img_projection``); prompt BOS + N image positions + BOS + text, as VLM2Vec's
    Phi-3-V processor builds it (Microsoft's drops the second BOS). ``num_crops``: the
    ``processor_kwargs`` of :func:`~extractors.hf_remote.load_remote_vlm` (VLM2Vec-Full: 4), else
    the checkpoint's ``preprocessor_config.json``, else the processor's default, 1.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extractors.base import Preprocessing

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Prompt:
    """A batch of token ids as the decoder gets them: ``image_mask`` marks the filler positions
    (what the ``aligned`` tokens replace), ``block_mask`` the whole image block (start and end
    tokens too)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_mask: torch.Tensor
    block_mask: torch.Tensor


@dataclass(frozen=True)
class RemoteCodeAdapter:
    """How featkit drives one remote-code VLM (the fields: see the module docstring)."""

    model_type: str
    language_model: str
    image_token: str | None
    preprocessing: Preprocessing
    architectures: tuple[str, ...] = ()
    vision: str = ""
    projector: str = ""
    tokens_attribute: str | None = None
    drop_cls: bool = False
    encode: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    image_size: Callable[[Any], int] | None = None
    image_transform: Callable[[Preprocessing, Mapping[str, Any]], tuple[Any, dict[str, Any]]] | None = None
    image_start: str | None = None
    image_end: str | None = None
    text_specials: bool = False
    pad_token: str | None = None
    lm_method: str = "forward"
    lm_inputs: Callable[[Prompt], dict[str, Any]] | None = None
    config_overrides: Callable[[torch.dtype], dict[str, Any]] | None = None
    auto_class: str = "AutoModel"
    processor_options: tuple[str, ...] = ()
    description: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def captured(module: torch.nn.Module, *, inputs: bool = False) -> Iterator[list[Any]]:
    """While the block runs, every call of ``module`` appends its output (or, with ``inputs``,
    its first positional input) to the yielded list: how an ``encode`` function reads the tokens
    inside a model's own call without running the vision tower twice."""
    seen: list[Any] = []
    if inputs:
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: seen.append(out))
    try:
        yield seen
    finally:
        handle.remove()

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- Qwen-VL ------------------------------------------------------------------------------------

def qwen_vl_image_size(config: Any) -> int:
    return int(config.visual["image_size"])


def qwen_vl_precision_flags(dtype: torch.dtype) -> dict[str, bool]:
    """The config flags ``QWenLMHeadModel.__init__`` casts the model by, exactly one set: the
    dtype featkit loads it in (left alone, the code follows the checkpoint config's flag, or
    with none set picks bf16/fp16 itself on a GPU)."""
    import torch

    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "fp32": dtype == torch.float32}


def qwen_vl_encode(model: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ViT's tokens as ``attn_pool`` receives them, and ``visual(pixels)``."""
    visual = model.transformer.visual
    with captured(visual.attn_pool, inputs=True) as seen:
        aligned = visual(pixels)
    return seen[0], aligned


QWEN_VL = RemoteCodeAdapter(
    model_type="qwen", auto_class="AutoModelForCausalLM", language_model="transformer",
    image_token="<imgpad>", image_start="<img>", image_end="</img>", pad_token="<|endoftext|>",
    encode=qwen_vl_encode, image_size=qwen_vl_image_size, config_overrides=qwen_vl_precision_flags,
    preprocessing=Preprocessing(size=448, mean=CLIP_MEAN, std=CLIP_STD, resize_mode="squash"),
    description="Qwen-VL / Qwen-VL-Chat (remote code): ViT tokens; resampler output",
)


# -- InternVL-Chat ------------------------------------------------------------------------------

def internvl_image_size(config: Any) -> int:
    return int(config.force_image_size or config.vision_config.image_size)


def internvl_encode(model: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """InternViT's tokens at ``select_layer`` (CLS dropped) from inside ``extract_feature``."""
    layer = model.config.select_layer
    with captured(model.vision_model) as seen:
        aligned = model.extract_feature(pixels)
    output = seen[0]
    tokens = output.last_hidden_state if layer == -1 else output.hidden_states[layer]
    return tokens[:, 1:], aligned


INTERNVL_CHAT = RemoteCodeAdapter(
    model_type="internvl_chat", language_model="language_model.model",
    image_token="<IMG_CONTEXT>", image_start="<img>", image_end="</img>",
    encode=internvl_encode, image_size=internvl_image_size,
    preprocessing=Preprocessing(size=448, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="squash"),
    description="InternVL-Chat (remote code): InternViT tokens; pixel shuffle + mlp1",
)


# -- CogVLM2 ------------------------------------------------------------------------------------

LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1


def cogvlm2_image_size(config: Any) -> int:
    return int(config.vision_config["image_size"])


def cogvlm2_encode(model: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EVA's patch tokens (CLS dropped) from inside ``vision(pixels)``, and that output."""
    vision = model.model.vision
    with captured(vision.transformer) as seen:
        aligned = vision(pixels)
    return seen[0][:, 1:], aligned


def cogvlm2_position_ids(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """CogVLM's positions: every language token, and the first and last token of an image run
    (boi, eoi), advances the position; the image's inner tokens share the position after boi;
    padding advances nothing."""
    import torch

    valid = attention_mask.bool()
    language = valid & (token_type_ids == LANGUAGE_TOKEN_TYPE)
    vision = valid & (token_type_ids == VISION_TOKEN_TYPE)
    edge = torch.ones_like(vision[:, :1])
    before = torch.cat([edge, language[:, :-1]], dim=1)
    after = torch.cat([language[:, 1:], edge], dim=1)
    boundary = vision & (before | after)
    language = language | boundary
    inner = vision & ~boundary
    step = language | (inner & torch.cat([~edge, language[:, :-1]], dim=1))
    step[:, 0] = False
    return step.long().cumsum(dim=1)


def cogvlm2_lm_inputs(prompt: Prompt) -> dict[str, Any]:
    token_type_ids = prompt.image_mask.long() * VISION_TOKEN_TYPE
    return {"token_type_ids": token_type_ids,
            "position_ids": cogvlm2_position_ids(token_type_ids, prompt.attention_mask)}


COGVLM2 = RemoteCodeAdapter(
    model_type="cogvlm2", architectures=("CogVLMForCausalLM",), auto_class="AutoModelForCausalLM",
    language_model="model",
    lm_method="llm_forward", lm_inputs=cogvlm2_lm_inputs, image_token=None,
    pad_token="<|reserved_special_token_0|>",
    encode=cogvlm2_encode, image_size=cogvlm2_image_size,
    preprocessing=Preprocessing(size=1344, mean=CLIP_MEAN, std=CLIP_STD, resize_mode="squash"),
    description="CogVLM2 (remote code): EVA2-CLIP tokens; conv + GLU + boi/eoi",
)


# -- Phi-3.5-V ----------------------------------------------------------------------------------

PHI3V_CROP = 336
#: Phi3VImageProcessor's own default when the checkpoint's preprocessor_config.json names none
PHI3V_DEFAULT_NUM_CROPS = 1


class Phi3VCrops:
    """PIL image -> ``(1 + g*g, 3, 336, 336)``: the centre square resized (bilinear, as
    ``HD_transform``) to the HD image (``g x 336`` px, normalised), that resized (bicubic, on
    the tensor, as the processor) to one global 336 px image, then its ``g x g`` crops row by
    row (picklable)."""

    def __init__(self, preprocessing: Preprocessing, grid: int) -> None:
        self.preprocessing = preprocessing
        self.grid = grid

    def __call__(self, image):
        import torch
        from PIL import Image
        from torchvision.transforms import functional

        pre, grid = self.preprocessing, self.grid
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize(
            (grid * PHI3V_CROP, grid * PHI3V_CROP), Image.BILINEAR)
        hd = functional.normalize(functional.to_tensor(image), pre.mean, pre.std)
        whole = torch.nn.functional.interpolate(hd[None], size=(PHI3V_CROP, PHI3V_CROP),
                                                mode="bicubic")
        crops = (hd.reshape(3, grid, PHI3V_CROP, grid, PHI3V_CROP).permute(1, 3, 0, 2, 4)
                 .reshape(-1, 3, PHI3V_CROP, PHI3V_CROP))
        return torch.cat([whole, crops])


def phi3v_transform(pre: Preprocessing, options: Mapping[str, Any]) -> tuple[Phi3VCrops, dict[str, Any]]:
    num_crops = int(options.get("num_crops", PHI3V_DEFAULT_NUM_CROPS))
    grid = max(1, math.isqrt(num_crops))
    return Phi3VCrops(pre, grid), {"num_crops": num_crops, "hd_size": grid * PHI3V_CROP}


def phi3v_encode(model: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_img_features`` on every crop, then ``hd_feature_transform`` as its forward does."""
    import torch

    embedding = model.model.vision_embed_tokens
    images, crops = pixels.shape[:2]
    features = embedding.get_img_features(pixels.flatten(0, 1))
    features = features.reshape(images, crops, -1, features.shape[-1])
    side = math.isqrt(crops - 1) * pixels.shape[-1]
    sizes = torch.tensor([[side, side]] * images, device=pixels.device)
    aligned = embedding.hd_feature_transform(features, sizes)
    return features.reshape(images, -1, features.shape[-1]), aligned.reshape(images, -1, aligned.shape[-1])


def phi3v_lm_inputs(prompt: Prompt) -> dict[str, Any]:
    """No image for the decoder call (VLM2Vec's forward splits the batch on ``image_sizes``)."""
    return {"image_sizes": [None] * len(prompt.input_ids)}


PHI3_V = RemoteCodeAdapter(
    model_type="phi3_v", auto_class="AutoModelForCausalLM", language_model="model",
    lm_inputs=phi3v_lm_inputs, image_token=None, text_specials=True,
    encode=phi3v_encode, image_transform=phi3v_transform, processor_options=("num_crops",),
    preprocessing=Preprocessing(size=PHI3V_CROP, mean=CLIP_MEAN, std=CLIP_STD),
    settings={"prompt": "BOS, image, BOS, text (VLM2Vec's Phi-3-V processor)"},
    description="Phi-3.5-V / VLM2Vec-Full (remote code): CLIP crop tokens; HD transform + projection",
)

#: the adapters extractors.hf_remote registers when imported
SHIPPED = (QWEN_VL, INTERNVL_CHAT, COGVLM2, PHI3_V)
