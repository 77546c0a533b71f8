"""The architecture tables' data: an unsupported class is one line naming the supported ones,
Molmo2 and Phi-4-multimodal have image routes, and VLM2Vec's per-backbone image settings are
valid arguments of transformers' own processors."""

from __future__ import annotations

import pytest

from extractors.hf_archs import ARCHITECTURES
from extractors.vlm2vec import VLM2VEC_IMAGE, VLM2VEC_QWEN_PIXELS


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


def test_an_unsupported_architecture_is_one_line_naming_the_supported_ones(tmp_path):
    import json

    import extractors
    from featkit.errors import UnknownNameError

    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llava", "architectures": ["FancyForConditionalGeneration"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnknownNameError, match="is a FancyForConditionalGeneration; the hf family "
                                                "supports LlavaForConditionalGeneration") as err:
        extractors.load_extractor("hf:some/fancy-model", weights=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model_class", ["Molmo2ForConditionalGeneration", "Phi4MultimodalForCausalLM"])
def test_molmo2_and_phi4_multimodal_are_supported_through_their_image_routes(model_class):
    from extractors.hf_archs import GET_IMAGE_FEATURES

    assert ARCHITECTURES[model_class].images != GET_IMAGE_FEATURES
