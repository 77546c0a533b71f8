"""Tiny, seeded, randomly initialised Hugging Face VLMs (LLaVA and Qwen2-VL) built offline.

Each builder writes a complete ``save_pretrained`` directory (config, weights, tokenizer, processor)
that loads back with ``AutoModelForImageTextToText`` / ``AutoProcessor``, so tests, the demo, the
notebooks and the adaptation code exercise the same loading and feature code as real checkpoints.

The tokenizer is a ``tokenizers`` WordLevel model over single characters (plus the special tokens
each architecture needs): every character is a token, so distinct texts (class names, captions)
give distinct token sequences without any downloaded vocabulary. ``vocab_size`` larger than the
character vocabulary pads it with unused tokens (the benchmark uses this to make the LM head as
large as a real 32k-vocabulary model's).
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


def _vocab(specials: list[str], vocab_size: int | None) -> dict[str, int]:
    tokens = specials + CHARACTERS
    if vocab_size is not None:
        if vocab_size < len(tokens):
            raise ValueError(f"vocab_size must be at least {len(tokens)}")
        tokens += [f"<extra_{i}>" for i in range(vocab_size - len(tokens))]
    return {token: index for index, token in enumerate(tokens)}


def _char_tokenizer(vocab: dict[str, int], *, bos: str | None, **special_tokens: Any):
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

    vocab = _vocab(LLAVA_SPECIALS, vocab_size)
    tokenizer = _char_tokenizer(
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
    return _save(model, processor, save_dir)


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

    vocab = _vocab(QWEN2VL_SPECIALS, vocab_size)
    tokenizer = _char_tokenizer(
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
    return _save(model, processor, save_dir)


def _save(model, processor, save_dir: str | os.PathLike) -> Path:
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
