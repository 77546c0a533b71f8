"""Text towers: each equals the library's own text encoder on the same (tiny) weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from extractors.text_towers import load_text_tower
from featkit.errors import FeatkitError, UnknownNameError

TEXTS = ["a photo of a 3.", "a photo of the number: \"7\".", "x"]

_TINY_VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
_TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
#: tiny open_clip configs of the three model classes the family builds
CONFIGS = {
    "featkit-test-clip": {"embed_dim": 16, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_TEXT},
    "featkit-test-nocausal-text": {  # a SigLIP-shaped text tower: CustomTextCLIP, no causal mask
        "embed_dim": 16, "custom_text": True, "init_logit_bias": -10, "vision_cfg": _TINY_VISION,
        "text_cfg": {**_TINY_TEXT, "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
    },
    "featkit-test-coca": {
        "embed_dim": 16, "custom_text": True,
        "vision_cfg": {**_TINY_VISION, "attentional_pool": True, "attn_pooler_heads": 2,
                       "output_tokens": True},
        "text_cfg": {**_TINY_TEXT, "embed_cls": True, "output_tokens": True},
        "multimodal_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                           "layers": 1, "attn_pooler_heads": 2},
    },
}


def _reference(model, texts, context_length=16):
    """open_clip's own tokenizer and ``encode_text`` (normalised)."""
    import open_clip

    with torch.no_grad():
        return model.encode_text(open_clip.tokenize(texts, context_length=context_length),
                                 normalize=True).numpy()


def test_tiny_clip_text_equals_open_clip_encode_text():
    import open_clip

    from extractors.tiny import TINY_CLIP_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_CLIP_CONFIG).eval()
    tower = load_text_tower("test:tiny-clip", device="cpu")
    out = tower.encode(TEXTS, batch_size=2)
    assert out.dtype == np.float32 and out.shape == (3, 16)
    np.testing.assert_allclose(out, _reference(model, TEXTS), atol=1e-6)
    identity = tower.identity()
    assert identity["weights"] == "random:seed0" and identity["image_kind"] == "aligned"
    assert identity["tokenizer"]["context_length"] == 16


@pytest.mark.parametrize("name", list(CONFIGS))
def test_open_clip_checkpoints_load_only_the_text_tower(name, tmp_path):
    """CLIP, CustomTextCLIP (SigLIP-shaped) and CoCa checkpoints: the text tower read from the
    whole model's file equals that model's ``encode_text``."""
    import open_clip

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / f"{name}.json").write_text(json.dumps(CONFIGS[name]))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(1)
    model = open_clip.create_model(name, pretrained=None).eval()
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    tower = load_text_tower(f"open_clip:{name}", weights=checkpoint, device="cpu")
    np.testing.assert_allclose(tower.encode(TEXTS), _reference(model, TEXTS), atol=1e-5)
    wrong = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(1)}, wrong)
    with pytest.raises(FeatkitError, match="does not fit this model's text tower"):
        load_text_tower(f"open_clip:{name}", weights=wrong, device="cpu")


def _hf_checkpoint(kind: str, path):
    """A tiny random CLIP / SigLIP / SigLIP2 with a character tokenizer, saved to ``path``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPConfig,
        CLIPModel,
        PreTrainedTokenizerFast,
        Siglip2Config,
        Siglip2Model,
        SiglipConfig,
        SiglipModel,
    )

    chars = list(" abcdefghijklmnopqrstuvwxyz0123456789.:\"")
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                        pad_token="<pad>", eos_token="</s>")
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 24,
            "pad_token_id": 0, "eos_token_id": 2, "bos_token_id": 2}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "image_size": 16, "patch_size": 8}
    config_class, model_class = {"clip": (CLIPConfig, CLIPModel), "siglip": (SiglipConfig, SiglipModel),
                                 "siglip2": (Siglip2Config, Siglip2Model)}[kind]
    extra = {"projection_dim": 24} if kind == "clip" else {}
    torch.manual_seed(2)
    model = model_class(config_class(text_config=text, vision_config=vision, **extra)).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


@pytest.mark.parametrize("kind, padding", [("clip", "longest"), ("siglip", "max_length"),
                                           ("siglip2", "max_length")])
def test_hf_text_towers_equal_get_text_features(kind, padding, tmp_path):
    from transformers import AutoTokenizer

    model, _ = _hf_checkpoint(kind, tmp_path / kind)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / kind)  # what the checkpoint loads with
    texts = [t.lower() for t in TEXTS] if kind == "siglip2" else TEXTS
    tokenizer.padding_side = "right"
    encoded = tokenizer(texts, padding=padding, max_length=24, truncation=True,
                        return_tensors="pt")
    with torch.no_grad():
        expected = model.get_text_features(input_ids=encoded["input_ids"],
                                           attention_mask=encoded["attention_mask"],
                                           return_dict=True).pooler_output
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    tower = load_text_tower(f"hf:{tmp_path / kind}", device="cpu")
    np.testing.assert_allclose(tower.encode([t.upper() for t in TEXTS] if kind == "siglip2"
                                            else TEXTS), expected, atol=1e-5)
    assert tower.identity()["tokenizer"]["padding"] == padding


def test_vlm_text_is_the_last_token_embedding():
    from featkit.text import embed_texts

    tower = load_text_tower("test:tiny-llava", device="cpu")
    assert tower.image_kind == "last_token"
    np.testing.assert_allclose(tower.encode(TEXTS), embed_texts("test:tiny-llava", TEXTS),
                               atol=1e-6)


def test_models_without_text_are_one_line_errors():
    with pytest.raises(UnknownNameError, match="has no text tower"):
        load_text_tower("pixels:8", device="cpu")
