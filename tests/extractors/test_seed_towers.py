"""The other towers the seeds name: BEiT-3 and AIMv2 (timm), CoCa's raw class token, and the
224/336/378 px variants as aliases; each tiny model equals the library's own forward."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("open_clip")

from extractors import get_spec, load_extractor  # noqa: E402
from extractors.open_clip import build_visual  # noqa: E402
from extractors.open_clip_towers import VisualTower, tower_dims  # noqa: E402


def test_tiny_beit3_equals_timms_forward():
    extractor = load_extractor("test:tiny-beit3")
    model = extractor.model
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = extractor(x, ["visual", "cls", "patch_mean", "cls@-1", "patch_mean@1"])
    with torch.inference_mode():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    assert torch.equal(out["visual"], pooled) and torch.equal(out["cls"], tokens[:, 0])
    assert torch.equal(out["cls@-1"], out["cls"])
    assert float((out["patch_mean"] - tokens[:, 1:].mean(1)).abs().max()) <= 1e-6
    assert type(model).__name__ == "VisionTransformer" and model.fc_norm is not None


@pytest.mark.parametrize(("alias", "model_id", "size"), [
    ("clip-l-336", "open_clip:ViT-L-14-336-quickgelu:openai", 336),
    ("dfn-h-378", "open_clip:ViT-H-14-378-quickgelu:dfn5b", 378),
    ("siglip2-so400m", "open_clip:ViT-SO400M-14-SigLIP2:webli", 224),
    ("beit3-b", "timm:beit3_base_patch16_224.in22k_ft_in1k", 224),
    ("aimv2-l", "timm:aimv2_large_patch14_224.apple_pt", 224),
    ("aimv2-h-448", "timm:aimv2_huge_patch14_448.apple_pt", 448),
])
def test_aliases_name_the_seed_variants(alias, model_id, size):
    spec = get_spec(alias)
    assert spec.name == model_id and spec.preprocessing.size == size
    assert "patch_mean" in spec.layers


def _coca_config() -> dict:
    return {"embed_dim": 16,
            "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32,
                           "attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
            "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}


def test_coca_raw_class_token_next_to_the_pooled_feature():
    torch.manual_seed(0)
    visual = build_visual(_coca_config())
    reference = build_visual(_coca_config())
    reference.load_state_dict(visual.state_dict())
    tower = VisualTower(visual)
    assert tower.kinds == ("visual", "aligned", "cls")
    assert tower_dims(tower, 32) == {"visual": 16, "aligned": 16, "cls": 32}
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out = tower(x, ["visual", "aligned", "cls"])
        raw = reference.transformer(reference._embeds(x))[:, 0]  # before the attentional pooler
        library = reference(x)
    assert torch.equal(out["cls"], raw)
    assert torch.equal(out["aligned"], library[0] if isinstance(library, tuple) else library)
    spec = get_spec("coca-l")
    assert spec.kinds["cls"] == 1024 and "raw class token" in spec.notes
