"""The architecture tables' data: refused classes give a one-line reason (none at present:
Molmo2 and Phi-4-multimodal have image routes), and VLM2Vec's per-backbone image settings are
valid arguments of transformers' own processors."""

from __future__ import annotations

import pytest

from extractors.hf_archs import ARCHITECTURES, REFUSED, refusal
from extractors.vlm2vec import VLM2VEC_IMAGE, VLM2VEC_QWEN_PIXELS


@pytest.mark.parametrize("model_class", sorted(REFUSED))
def test_a_refused_class_has_a_one_line_reason(model_class):
    reason = refusal(model_class)
    assert reason and "\n" not in reason
    assert model_class not in ARCHITECTURES


def test_a_supported_class_is_not_refused():
    assert all(refusal(name) is None for name in ARCHITECTURES)


def test_vlm2vec_qwen_backbones_are_featkit_architectures():
    names = {a.name for a in ARCHITECTURES.values()}
    assert {"qwen2_vl", "qwen2_5_vl"} <= set(VLM2VEC_IMAGE) & names


def test_vlm2vec_qwen_pixel_limits_bound_the_processors_grid():
    pytest.importorskip("transformers")
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(**VLM2VEC_IMAGE["qwen2_vl"].processor_kwargs)
    for side in (2000, 20):
        grid = processor(images=Image.new("RGB", (side, side)), return_tensors="pt")["image_grid_thw"]
        pixels = int(grid.prod()) * processor.patch_size ** 2
        assert VLM2VEC_QWEN_PIXELS["shortest_edge"] <= pixels <= VLM2VEC_QWEN_PIXELS["longest_edge"]


def test_loading_a_refused_architecture_says_why(tmp_path, monkeypatch):
    """A local checkpoint of a refused class is refused in one line with the reason, not with
    the generic 'unsupported architecture' list (no class is refused at present, so the test
    refuses LLaVA's for the duration)."""
    import json

    import extractors
    from extractors import hf_archs
    from featkit.errors import UnknownNameError

    reason = "refused for this test, whatever the checkpoint holds"
    monkeypatch.setitem(hf_archs.REFUSED, "RefusedForConditionalGeneration", reason)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llava", "architectures": ["RefusedForConditionalGeneration"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnknownNameError, match=f"RefusedForConditionalGeneration: {reason}"):
        extractors.load_extractor("hf:some/refused-model", weights=tmp_path)


@pytest.mark.parametrize("model_class", ["Molmo2ForConditionalGeneration", "Phi4MultimodalForCausalLM"])
def test_molmo2_and_phi4_multimodal_are_supported_through_their_image_routes(model_class):
    from extractors.hf_archs import GET_IMAGE_FEATURES

    assert refusal(model_class) is None
    assert ARCHITECTURES[model_class].images != GET_IMAGE_FEATURES
