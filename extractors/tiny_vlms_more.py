"""More tiny VLM writers (see :mod:`extractors.tiny_vlms`): Molmo2 and Phi-4-multimodal, built
from tiny configs (widths 32-48, 2 blocks) with seeded random weights and written with their
real processor classes and a character tokenizer. :mod:`extractors.tiny` registers them as
``test:tiny-molmo2`` and ``test:tiny-phi4-multimodal``.
"""

from __future__ import annotations

import os
from pathlib import Path

from extractors.tiny_vlms import build_vocab, char_tokenizer, save_tiny, seeded

MOLMO2_SPECIALS = ["<|endoftext|>", "<unk>", "<|im_end|>", "<|image|>", "<|video|>", "<im_patch>",
                   "<im_col>", "<im_start>", "<low_res_im_start>", "<frame_start>", "<im_end>",
                   "<frame_end>", "<im_low>"]
PHI4_SPECIALS = ["<|endoftext|>", "<unk>", "<|end|>", "<|image|>", "<|audio|>"]


def build_tiny_molmo2(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``Molmo2ForConditionalGeneration``: SigLIP2-style tower (16 px crops, patch 4, no
    class token, 2 blocks, width 32), the adapter reading blocks 2 and 1 concatenated
    (``vision_feature_layer=[-1, 0]``) with 2 x 2 attention pooling, Molmo2 LM (width 48). Its
    processor (overlap margins of 1 patch, up to 4 crops) makes a 32 px square a 2 x 2 canvas of
    crops plus the global view: 5 crops, 4 + 9 image tokens."""
    from transformers import (
        Molmo2Config,
        Molmo2ForConditionalGeneration,
        Molmo2ImageProcessor,
        Molmo2Processor,
    )
    from transformers.models.molmo2.video_processing_molmo2 import Molmo2VideoProcessor

    vocab = build_vocab(MOLMO2_SPECIALS, None)
    tokenizer = char_tokenizer(vocab, bos=None, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                extra_special_tokens=MOLMO2_SPECIALS[3:])
    # weights of std 0.3 / 0.1 (not 0.02): at 0.02 the adapter's gated MLP shrinks the image
    # tokens to ~1e-10 and the tests could not tell one image from another
    heads = {"num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8}
    config = Molmo2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "image_size": [16, 16], "patch_size": 4, "initializer_range": 0.3, **heads},
        adapter_config={"vision_feature_layer": [-1, 0], "hidden_size": 32, "intermediate_size": 64,
                        "text_hidden_size": 48, "initializer_range": 0.1, **heads},
        text_config={"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
                     "vocab_size": len(vocab), "additional_vocab_size": 0,
                     "max_position_embeddings": 1024, "pad_token_id": vocab["<|endoftext|>"],
                     "bos_token_id": vocab["<|im_end|>"], "eos_token_id": vocab["<|im_end|>"],
                     "initializer_range": 0.3},
        initializer_range=0.3, image_start_token_id=vocab["<im_start>"], low_res_image_start_token_id=vocab["<low_res_im_start>"],
        image_end_token_id=vocab["<im_end>"], image_patch_id=vocab["<im_patch>"],
        frame_start_token_id=vocab["<frame_start>"], frame_end_token_id=vocab["<frame_end>"],
    )
    pixels = {"size": {"height": 16, "width": 16}, "patch_size": 4, "pooling_size": [2, 2]}
    processor = Molmo2Processor(
        image_processor=Molmo2ImageProcessor(**pixels, overlap_margins=[1, 1], max_crops=4),
        video_processor=Molmo2VideoProcessor(**pixels), tokenizer=tokenizer,
    )
    return save_tiny(seeded(Molmo2ForConditionalGeneration, config, seed), processor, save_dir)


def build_tiny_phi4_multimodal(save_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny ``Phi4MultimodalForCausalLM``: SigLIP-style tower (32 px crops, patch 1 -- the
    processor counts 16 x 16 pooled tokens per crop, so a crop must be 32 patches wide -- no
    class token, 2 blocks, width 32, feature layer -2), 2 x 2 average pool, MLP projection, Phi
    LM (width 48), and the smallest audio tower the config allows (never run). Its processor
    makes a 64 px square 2 x 2 sub-images plus the global image (1329 image tokens)."""
    from transformers import (
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
        Phi4MultimodalImageProcessor,
        Phi4MultimodalProcessor,
    )

    vocab = build_vocab(PHI4_SPECIALS, None)
    tokenizer = char_tokenizer(vocab, bos=None, pad_token="<|endoftext|>", eos_token="<|end|>",
                                extra_special_tokens={"image_token": "<|image|>", "audio_token": "<|audio|>"})
    config = Phi4MultimodalConfig(
        vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        original_max_position_embeddings=4096, bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|end|>"], pad_token_id=vocab["<|endoftext|>"],
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 1, "crop_size": 32,
                       "image_token_id": vocab["<|image|>"], "feature_layer": -2},
        audio_config={"hidden_size": 8, "intermediate_size": 8, "num_blocks": 1, "num_attention_heads": 1,
                      "ext_pw_out_channel": 8, "depthwise_separable_out_channel": 8,
                      "nemo_conv_channels": 8, "bias_max_distance": 8,
                      "audio_token_id": vocab["<|audio|>"]},
    )
    processor = Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(size={"height": 32, "width": 32}, patch_size=1,
                                                     dynamic_hd=4),
        audio_processor=Phi4MultimodalFeatureExtractor(), tokenizer=tokenizer,
    )
    model = seeded(Phi4MultimodalForCausalLM, config, seed)
    _randomise_separators(model, seed)
    return save_tiny(model, processor, save_dir)


def _randomise_separators(model, seed: int) -> None:
    """Phi-4-multimodal initialises its row and global separators to zeros; seeded random values
    instead make their place in the HD order show in the features (and in the tests)."""
    import torch

    embedding = model.model.embed_tokens_extend.image_embed
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed + 1)
        for separator in (embedding.global_img_feature_extensor, embedding.sub_img_feature_extensor):
            separator.copy_(torch.randn_like(separator))
