"""The tiny VLMs' ``save_pretrained`` writers: each builds a transformers model of one
architecture from a tiny config (hidden sizes 16-48, 1-3 layers), the way transformers' own
tests build them, with seeded random weights, and writes it with its processor.

Their tokenizer is a ``tokenizers`` WordLevel model over single characters (plus the special
tokens each architecture needs): every character is a token, so distinct texts give distinct
token sequences without any downloaded vocabulary. ``vocab_size`` larger than the character
vocabulary pads it with unused tokens. :mod:`extractors.tiny` registers them as ``test:`` models.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

CHARACTERS = list(" " + string.ascii_lowercase + string.digits + ".,:;!?'\"-()/&+_")

LLAVA_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
QWEN2VL_SPECIALS = [
    "<|endoftext|>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def build_vocab(specials: list[str], vocab_size: int | None) -> dict[str, int]:
    tokens = specials + CHARACTERS
    if vocab_size is not None:
        if vocab_size < len(tokens):
            raise ValueError(f"vocab_size must be at least {len(tokens)}")
        tokens += [f"<extra_{i}>" for i in range(vocab_size - len(tokens))]
    return {token: index for index, token in enumerate(tokens)}


def char_tokenizer(vocab: dict[str, int], *, bos: str | None, **special_tokens: Any):
    """A ``PreTrainedTokenizerFast``: lower-cased, whitespace runs folded to one space, one token per
    character; special tokens (``<image>``...) are matched whole before that split."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase(),
         normalizers.Replace(Regex(r"\s+"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    if bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", **special_tokens)


def build_tiny_llava(
    save_dir: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 16,
    patch_size: int = 4,
    vision_hidden: int = 32,
    vision_layers: int = 3,
    text_hidden: int = 48,
    text_layers: int = 2,
    vocab_size: int | None = None,
) -> Path:
    """Write a tiny ``LlavaForConditionalGeneration`` (CLIP tower with CLS, feature layer -2,
    ``"default"`` strategy, Llama LM) and its ``LlavaProcessor`` to ``save_dir``; returns it."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vocab = build_vocab(LLAVA_SPECIALS, vocab_size)
    tokenizer = char_tokenizer(
        vocab, bos="<s>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    vision = CLIPVisionConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=4, projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(vocab), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
        num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"], tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=vocab["<image>"],
        image_seq_length=(image_size // patch_size) ** 2, vision_feature_layer=-2,
        vision_feature_select_strategy="default", pad_token_id=vocab["<pad>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return save_tiny(model, processor, save_dir)


def build_tiny_qwen2vl(
    save_dir: str | os.PathLike,
    *,
    seed: int = 0,
    patch_size: int = 4,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 48,
    text_layers: int = 2,
    vocab_size: int | None = None,
) -> Path:
    """Write a tiny ``Qwen2VLForConditionalGeneration`` (2x2 PatchMerger, M-RoPE LM) and its
    ``Qwen2VLProcessor`` (with the video processor it requires) to ``save_dir``; returns it."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    vocab = build_vocab(QWEN2VL_SPECIALS, vocab_size)
    tokenizer = char_tokenizer(
        vocab, bos=None, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
        },
    )
    heads = 4
    half_head = text_hidden // heads // 2
    mrope = [half_head - 2 * (half_head // 3), half_head // 3, half_head // 3]
    config = Qwen2VLConfig(
        vision_config={
            "depth": vision_layers, "embed_dim": vision_hidden, "hidden_size": text_hidden,
            "num_heads": 4, "mlp_ratio": 2, "patch_size": patch_size, "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            "vocab_size": len(vocab), "hidden_size": text_hidden,
            "intermediate_size": 2 * text_hidden, "num_hidden_layers": text_layers,
            "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
            "bos_token_id": vocab["<|endoftext|>"], "eos_token_id": vocab["<|im_end|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
    factor = 2 * patch_size
    size = {"shortest_edge": factor * factor, "longest_edge": (16 * factor) ** 2}
    pixel_kwargs = {"size": size, "patch_size": patch_size, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixel_kwargs),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixel_kwargs),
    )
    return save_tiny(model, processor, save_dir)


def save_tiny(model, processor, save_dir: str | os.PathLike) -> Path:
    from transformers.utils import logging as hf_logging

    path = Path(save_dir)
    path.mkdir(parents=True, exist_ok=True)
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
        processor.save_pretrained(path)
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
    return path




# -- the other architectures (each from a tiny config, seed 0) -----------------------------------

QWEN_SPECIALS = [*QWEN2VL_SPECIALS, "<image>"]


def seeded(model_class: Any, config: Any, seed: int) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config).eval()


def _llama_text(vocab: dict[str, int], *, pad: str, bos: str, eos: str, hidden: int = 48,
                layers: int = 2) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, pad_token_id=vocab[pad], bos_token_id=vocab[bos],
        eos_token_id=vocab[eos], tie_word_embeddings=False,
    )


def _qwen2_text(vocab: dict[str, int], *, hidden: int = 48, layers: int = 2) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, pad_token_id=vocab["<|endoftext|>"],
        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"],
        tie_word_embeddings=False,
    )


def _llava_tokenizer(vocab: dict[str, int], **extra: Any):
    return char_tokenizer(vocab, bos="<s>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                           extra_special_tokens={"image_token": "<image>", **extra})


def _qwen_tokenizer(vocab: dict[str, int], image_token: str = "<|image_pad|>"):
    return char_tokenizer(
        vocab, bos=None, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        extra_special_tokens={
            "image_token": image_token, "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
        },
    )


def build_tiny_llava_next(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``LlavaNextForConditionalGeneration``: CLIP tower (8 px tiles, patch 4, CLS, layer
    -2, CLS dropped), any-resolution grid pinpoints up to 16 x 16 (a square image: 2 x 2 tiles plus
    the base image), Llama LM."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    vocab = build_vocab(LLAVA_SPECIALS, None)
    pinpoints = [[8, 16], [16, 8], [16, 16]]
    vision = CLIPVisionConfig(image_size=8, patch_size=4, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
    config = LlavaNextConfig(
        vision_config=vision, text_config=_llama_text(vocab, pad="<pad>", bos="<s>", eos="</s>"),
        image_token_id=vocab["<image>"], image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
        vision_feature_select_strategy="default", pad_token_id=vocab["<pad>"],
    )
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 8},
                                              crop_size={"height": 8, "width": 8},
                                              image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=_llava_tokenizer(vocab),
                                   patch_size=4, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1)
    return save_tiny(seeded(LlavaNextForConditionalGeneration, config, seed), processor, save_dir)


def build_tiny_llava_onevision(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``LlavaOnevisionForConditionalGeneration``: SigLIP tower (8 px tiles, patch 4, no
    CLS, last layer, all tokens), any-resolution pinpoints up to 16 x 16, Qwen2 LM."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    vocab = build_vocab(QWEN_SPECIALS, None)
    pinpoints = [[8, 16], [16, 8], [16, 16]]
    vision = SiglipVisionConfig(image_size=8, patch_size=4, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=_qwen2_text(vocab), image_token_id=vocab["<image>"],
        video_token_id=vocab["<|video_pad|>"], image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    pixel_kwargs = {"size": {"height": 8, "width": 8}, "image_grid_pinpoints": pinpoints}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(**pixel_kwargs),
        tokenizer=_qwen_tokenizer(vocab, image_token="<image>"),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 8, "width": 8}),
        num_image_tokens=4, vision_feature_select_strategy="full",
    )
    return save_tiny(seeded(LlavaOnevisionForConditionalGeneration, config, seed), processor, save_dir)


def _qwen_text_config(vocab: dict[str, int], *, hidden: int = 48, layers: int = 2, heads: int = 4,
                      interleaved: bool = False) -> dict[str, Any]:
    """A Qwen-VL language model config with multimodal RoPE sections for its head size."""
    half_head = hidden // heads // 2
    mrope = [half_head - 2 * (half_head // 3), half_head // 3, half_head // 3]
    rope = {"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0}
    if interleaved:
        rope["mrope_interleaved"] = True
    return {
        "vocab_size": len(vocab), "hidden_size": hidden, "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 2,
        "head_dim": hidden // heads, "max_position_embeddings": 1024, "rope_parameters": rope,
        "bos_token_id": vocab["<|endoftext|>"], "eos_token_id": vocab["<|im_end|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }


def _qwen_token_ids(vocab: dict[str, int]) -> dict[str, int]:
    return {"image_token_id": vocab["<|image_pad|>"], "video_token_id": vocab["<|video_pad|>"],
            "vision_start_token_id": vocab["<|vision_start|>"],
            "vision_end_token_id": vocab["<|vision_end|>"]}


def build_tiny_qwen2_5_vl(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``Qwen2_5_VLForConditionalGeneration``: window-attention ViT (patch 4, windows of
    16 px, the second block full attention), 2 x 2 merger, M-RoPE Qwen2.5 LM."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    vocab = build_vocab(QWEN2VL_SPECIALS, None)
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4,
                       "out_hidden_size": 48, "patch_size": 4, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 16, "fullatt_block_indexes": [1]},
        text_config=_qwen_text_config(vocab), **_qwen_token_ids(vocab),
    )
    size = {"shortest_edge": 64, "longest_edge": 128 ** 2}
    pixel_kwargs = {"size": size, "patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixel_kwargs),
                                    tokenizer=_qwen_tokenizer(vocab),
                                    video_processor=Qwen2VLVideoProcessor(**pixel_kwargs))
    return save_tiny(seeded(Qwen2_5_VLForConditionalGeneration, config, seed), processor, save_dir)


def build_tiny_qwen3_vl(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``Qwen3VLForConditionalGeneration``: ViT (patch 4, learned position embeddings,
    DeepStack features from block 0), 2 x 2 merger, interleaved M-RoPE Qwen3 LM."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    vocab = build_vocab(QWEN2VL_SPECIALS, None)
    config = Qwen3VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4,
                       "out_hidden_size": 48, "patch_size": 4, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "num_position_embeddings": 64,
                       "deepstack_visual_indexes": [0]},
        text_config=_qwen_text_config(vocab, interleaved=True), **_qwen_token_ids(vocab),
    )
    size = {"shortest_edge": 64, "longest_edge": 128 ** 2}
    pixel_kwargs = {"size": size, "patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**pixel_kwargs),
                                 tokenizer=_qwen_tokenizer(vocab),
                                 video_processor=Qwen3VLVideoProcessor(**pixel_kwargs))
    return save_tiny(seeded(Qwen3VLForConditionalGeneration, config, seed), processor, save_dir)


def build_tiny_internvl(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``InternVLForConditionalGeneration`` (InternVL 2.5/3 layout): InternViT (16 px
    tiles, patch 4, CLS, last layer, CLS dropped), 0.5 pixel shuffle, MLP projector, Qwen2 LM;
    its processor crops large images into up to 4 tiles plus a thumbnail."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
    )

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>",
                "<IMG_CONTEXT>", "<video>"]
    vocab = build_vocab(specials, None)
    tokenizer = char_tokenizer(
        vocab, bos=None, pad_token="<|endoftext|>", eos_token="<|im_end|>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )
    vision = InternVLVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, image_size=[16, 16], patch_size=[4, 4])
    config = InternVLConfig(vision_config=vision, text_config=_qwen2_text(vocab),
                            image_token_id=vocab["<IMG_CONTEXT>"], downsample_ratio=0.5,
                            vision_feature_layer=-1, vision_feature_select_strategy="default",
                            image_seq_length=4)
    pixels = {"size": {"height": 16, "width": 16}}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(**pixels, crop_to_patches=True, min_patches=1,
                                              max_patches=4),
        tokenizer=tokenizer, video_processor=InternVLVideoProcessor(**pixels), image_seq_length=4,
    )
    return save_tiny(seeded(InternVLForConditionalGeneration, config, seed), processor, save_dir)


IDEFICS3_SPECIALS = [*LLAVA_SPECIALS, "<fake_token_around_image>", "<global-img>",
                     "<end_of_utterance>",
                     *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]


def _idefics3_parts(vocab: dict[str, int], vision_config_class: Any, config_class: Any) -> Any:
    vision = vision_config_class(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, image_size=16, patch_size=4)
    return config_class(vision_config=vision,
                        text_config=_llama_text(vocab, pad="<pad>", bos="<s>", eos="</s>"),
                        scale_factor=2, image_token_id=vocab["<image>"], pad_token_id=vocab["<pad>"])


def _idefics3_tokenizer(vocab: dict[str, int]):
    return char_tokenizer(vocab, bos="<s>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                           extra_special_tokens=IDEFICS3_SPECIALS[4:])


def build_tiny_idefics3(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``Idefics3ForConditionalGeneration``: SigLIP-style tower (16 px, patch 4, no CLS),
    pixel-shuffle connector (scale 2), Llama LM; its processor splits a 32 px image into 2 x 2
    tiles plus the global image."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    vocab = build_vocab(IDEFICS3_SPECIALS, None)
    config = _idefics3_parts(vocab, Idefics3VisionConfig, Idefics3Config)
    image_processor = Idefics3ImageProcessor(size={"longest_edge": 32},
                                             max_image_size={"longest_edge": 16},
                                             do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor,
                                  tokenizer=_idefics3_tokenizer(vocab), image_seq_len=4)
    return save_tiny(seeded(Idefics3ForConditionalGeneration, config, seed), processor, save_dir)


def build_tiny_smolvlm(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``SmolVLMForConditionalGeneration``: the Idefics3 layout (SigLIP-style tower, 16 px,
    patch 4; pixel-shuffle connector, scale 2; Llama LM); its processor (which needs
    ``num2words``) splits a 32 px image into 2 x 2 tiles plus the global image."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
        SmolVLMVisionConfig,
    )

    vocab = build_vocab([*IDEFICS3_SPECIALS, "<video>"], None)
    config = _idefics3_parts(vocab, SmolVLMVisionConfig, SmolVLMConfig)
    sizes = {"size": {"longest_edge": 32}, "max_image_size": {"longest_edge": 16}}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**sizes, do_image_splitting=True),
        tokenizer=_idefics3_tokenizer(vocab), video_processor=SmolVLMVideoProcessor(**sizes),
        image_seq_len=4,
    )
    return save_tiny(seeded(SmolVLMForConditionalGeneration, config, seed), processor, save_dir)



def build_tiny_paligemma(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``PaliGemmaForConditionalGeneration``: SigLIP tower (16 px, patch 4, no CLS, last
    layer), linear projector, Gemma LM with prefix (bidirectional) attention over image and
    prompt."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    vocab = build_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], None)
    tokenizer = char_tokenizer(vocab, bos="<bos>", pad_token="<pad>", bos_token="<bos>",
                                eos_token="<eos>", extra_special_tokens={"image_token": "<image>"})
    vision = SiglipVisionConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, projection_dim=48)
    text = GemmaConfig(vocab_size=len(vocab), hidden_size=48, intermediate_size=96,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                       head_dim=12, max_position_embeddings=1024, pad_token_id=vocab["<pad>"],
                       bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"])
    config = PaliGemmaConfig(vision_config=vision, text_config=text, projection_dim=48,
                             image_token_id=vocab["<image>"], pad_token_id=vocab["<pad>"])
    image_processor = SiglipImageProcessor(size={"height": 16, "width": 16}, image_seq_length=16)
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(seeded(PaliGemmaForConditionalGeneration, config, seed), processor, save_dir)


def build_tiny_blip2(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``Blip2ForConditionalGeneration``: EVA-style ViT (16 px, patch 4, CLS), a 1-layer
    Q-Former with 4 queries, the language projection, OPT LM; its processor puts the 4 query
    tokens before the prompt."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    vocab = build_vocab(["<pad>", "<unk>", "</s>", "<image>"], None)
    # no image_token attribute: Blip2Processor adds "<image>" as its own AddedToken
    tokenizer = char_tokenizer(vocab, bos="</s>", pad_token="<pad>", bos_token="</s>",
                                eos_token="</s>")
    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=16, patch_size=4)
    qformer = Blip2QFormerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, encoder_hidden_size=32, vocab_size=len(vocab))
    text = OPTConfig(vocab_size=len(vocab), hidden_size=48, num_hidden_layers=2,
                     num_attention_heads=4, ffn_dim=96, word_embed_proj_dim=48,
                     max_position_embeddings=1024, pad_token_id=vocab["<pad>"],
                     bos_token_id=vocab["</s>"], eos_token_id=vocab["</s>"])
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=4, image_token_id=vocab["<image>"])
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 16, "width": 16}),
                               tokenizer=tokenizer, num_query_tokens=4)
    return save_tiny(seeded(Blip2ForConditionalGeneration, config, seed), processor, save_dir)


# -- dual encoders (the vision side is what featkit reads; the text side keeps the model whole) --

_TINY_TOWER_TEXT = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 16,
                    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def build_tiny_hf_clip(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny transformers ``CLIPModel`` (ViT 16 px, patch 4, 2 layers, width 32; projection 24)
    and its ``CLIPImageProcessor``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        vision_config={"image_size": 16, "patch_size": 4, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        text_config=_TINY_TOWER_TEXT, projection_dim=24,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return save_tiny(seeded(CLIPModel, config, seed), image_processor, save_dir)


def build_tiny_siglip2(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny transformers ``Siglip2Model`` (NaFlex: patch 4, up to 16 patches, 2 layers, width
    32, attention-pool head) and its ``Siglip2ImageProcessor``."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    config = Siglip2Config(
        vision_config={"patch_size": 4, "num_patches": 16, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        text_config=_TINY_TOWER_TEXT,
    )
    image_processor = Siglip2ImageProcessor(patch_size=4, max_num_patches=16)
    return save_tiny(seeded(Siglip2Model, config, seed), image_processor, save_dir)
