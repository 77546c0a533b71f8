"""Every hf architecture on its tiny model (``test:tiny-<name>``): features equal the library's
own calls on the same weights, ``aligned`` is the projector (and the model's own glue: pixel
shuffle, Q-Former, tile packing) applied to the selected vision tokens and what the language model
receives, ``last_token`` is VLM2Vec's forward (LM head, all hidden states), left and right padding
agree, batched equals one at a time, and a checkpoint without weights is a one-line error.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from extractors import get_spec, load_extractor  # noqa: E402
from extractors.layers import expand_layers  # noqa: E402
from extractors.tiny import tiny_model_dir  # noqa: E402
from featkit.errors import MissingWeightsError  # noqa: E402
from featkit.testing.vlms import (  # noqa: E402
    check_batched_equals_single,
    check_padding_sides_agree,
    max_diff,
    processor_inputs,
    random_images,
    stacked,
)

TOL = 1e-5
MODELS = ["test:tiny-llava-next", "test:tiny-llava-onevision", "test:tiny-internvl",
          "test:tiny-idefics3", "test:tiny-smolvlm", "test:tiny-paligemma", "test:tiny-blip2",
          "test:tiny-qwen2_5_vl", "test:tiny-qwen3_vl", "test:tiny-llava", "test:tiny-qwen2vl"]
_LOADED: dict = {}


def _loaded(model: str):
    if model == "test:tiny-smolvlm":
        pytest.importorskip("num2words", reason="SmolVLM's processor needs num2words (dev extra)")
    if model not in _LOADED:
        _LOADED[model] = load_extractor(model)
    return _LOADED[model]


@pytest.fixture(params=MODELS)
def vlm(request):
    return _loaded(request.param)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    return random_images(n, seed)


def _module(root, path: str):
    for name in path.split("."):
        root = getattr(root, name)
    return root


def _forward(vlm, inputs, **kwargs):
    """The library's own full forward (LM head included) on processor inputs."""
    with torch.inference_mode():
        return vlm.model(**inputs, use_cache=False, **kwargs)


def _lm_hidden_states(vlm, output):
    return (output.language_model_outputs if vlm.architecture == "blip_2" else output).hidden_states


# -- visual and aligned ---------------------------------------------------------------------------


def _reference_visual_aligned(vlm, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``visual`` and ``aligned`` rebuilt from the model's parts: the vision tower called on its
    own, the configured selection, then the projector and the model's own glue."""
    base, config, n = vlm.base, vlm.model.config, len(inputs["input_ids"])
    pixels = inputs["pixel_values"]
    arch = vlm.architecture
    with torch.inference_mode():
        if arch in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            out = base.visual(pixels, grid_thw=inputs["image_grid_thw"])
            tokens = out.last_hidden_state.reshape(n, -1, out.last_hidden_state.shape[-1])
            merged = out.pooler_output.reshape(n, -1, out.pooler_output.shape[-1])
            return tokens.mean(1), merged.mean(1)
        if arch in ("idefics3", "smolvlm"):
            flat = pixels.reshape(-1, *pixels.shape[2:])
            tokens = base.vision_model(pixel_values=flat).last_hidden_state
            projected = base.connector(tokens)
            return (tokens.reshape(n, -1, tokens.shape[-1]).mean(1),
                    projected.reshape(n, -1, projected.shape[-1]).mean(1))
        if arch == "blip_2":
            tokens = vlm.model.vision_model(pixel_values=pixels).last_hidden_state
            queries = vlm.model.qformer(query_embeds=vlm.model.query_tokens.expand(n, -1, -1),
                                        encoder_hidden_states=tokens).last_hidden_state
            return tokens.mean(1), vlm.model.language_projection(queries).mean(1)
        if arch == "paligemma":
            tokens = base.vision_tower(pixels).last_hidden_state
            return tokens.mean(1), base.multi_modal_projector(tokens).mean(1)
        if arch == "internvl":
            flat = pixels.reshape(-1, *pixels.shape[-3:])
            tokens = base.vision_tower(pixel_values=flat).last_hidden_state[:, 1:]
            side = int(tokens.shape[1] ** 0.5)
            shuffled = base.pixel_shuffle(tokens.reshape(len(flat), side, side, -1),
                                          scale_factor=config.downsample_ratio)
            projected = base.multi_modal_projector(shuffled.reshape(len(flat), -1, shuffled.shape[-1]))
            return (tokens.reshape(n, -1, tokens.shape[-1]).mean(1),
                    projected.reshape(n, -1, projected.shape[-1]).mean(1))
        # LLaVA, LLaVA-NeXT, LLaVA-OneVision: the configured layer and strategy
        flat = pixels.reshape(-1, *pixels.shape[-3:])
        hidden = base.vision_tower(flat, output_hidden_states=True).hidden_states[config.vision_feature_layer]
        tokens = hidden[:, 1:] if config.vision_feature_select_strategy == "default" else hidden
        projected = base.multi_modal_projector(tokens)
        visual = tokens.reshape(n, -1, tokens.shape[-1]).mean(1)
        if arch == "llava":
            return visual, projected.mean(1)
        per_image = list(projected.reshape(n, -1, *projected.shape[1:]))
        extra = ({"vision_feature_select_strategy": config.vision_feature_select_strategy}
                 if arch == "llava_next" else {"vision_aspect_ratio": config.vision_aspect_ratio})
        packed, lengths = base.pack_image_features(per_image, inputs["image_sizes"],
                                                   image_newline=base.image_newline, **extra)
        if isinstance(packed, torch.Tensor):
            packed = packed.split(lengths.tolist())
        return visual, torch.stack([p.mean(0) for p in packed])


def test_visual_and_aligned_are_the_projector_on_the_selected_tokens(vlm):
    images = _images(3, seed=1)
    out = vlm(stacked(vlm, images), ["visual", "aligned"])
    visual, aligned = _reference_visual_aligned(vlm, processor_inputs(vlm, images))
    assert max_diff(out["visual"], visual) <= TOL
    assert max_diff(out["aligned"], aligned) <= TOL


def test_aligned_is_what_the_language_model_receives(vlm):
    images = _images(2, seed=2)
    inputs = processor_inputs(vlm, images)
    captured = {}

    def hook(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    language = _module(vlm.model if vlm.arch.base == "" else vlm.base, vlm.arch.language.split(".")[0])
    handle = language.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        _forward(vlm, inputs)
    finally:
        handle.remove()
    is_image = inputs["input_ids"] == vlm.model.config.image_token_id
    received = torch.stack([captured["embeds"][i][is_image[i]].mean(0) for i in range(2)])
    assert max_diff(vlm(stacked(vlm, images), ["aligned"])["aligned"], received) <= TOL


#: the architectures whose vision tower has a class token (the others have no ``cls`` kind)
CLS_MODELS = ["test:tiny-llava-next", "test:tiny-internvl", "test:tiny-blip2", "test:tiny-llava"]


def test_the_class_token_models_are_those_with_a_cls_kind():
    assert [m for m in MODELS if "cls" in _loaded(m).kinds] == CLS_MODELS


@pytest.mark.parametrize("model", CLS_MODELS)
def test_cls_is_the_class_token_of_the_whole_image(model):
    vlm = _loaded(model)
    images = _images(2, seed=3)
    inputs = processor_inputs(vlm, images)
    pixels = inputs["pixel_values"]
    with torch.inference_mode():
        if vlm.architecture == "blip_2":
            cls = vlm.model.vision_model(pixel_values=pixels).last_hidden_state[:, 0]
        else:
            flat = pixels.reshape(-1, *pixels.shape[-3:])
            tower = vlm.base.vision_tower(pixel_values=flat, output_hidden_states=True)
            layer = vlm.model.config.vision_feature_layer
            states = tower.last_hidden_state if vlm.architecture == "internvl" else tower.hidden_states[layer]
            cls = states.reshape(2, -1, *states.shape[1:])[:, vlm.arch.global_tile, 0]
    assert max_diff(vlm(stacked(vlm, images), ["cls"])["cls"], cls) <= TOL


def test_qformer_kind_is_the_query_outputs():
    vlm = load_extractor("test:tiny-blip2")
    images = _images(2, seed=4)
    inputs = processor_inputs(vlm, images)
    with torch.inference_mode():
        output = vlm.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True)
        queries = output.qformer_outputs.last_hidden_state
    assert max_diff(vlm(stacked(vlm, images), ["qformer"])["qformer"], queries.mean(1)) <= TOL


# -- last_token ------------------------------------------------------------------------------------


def test_last_token_is_vlm2vecs_forward(vlm):
    images = _images(3, seed=5)
    kinds = ["last_token", *expand_layers({"last_token": vlm.kinds.layers["last_token"]}, "all",
                                          model=vlm.spec.name)]
    out = vlm(stacked(vlm, images), kinds)
    inputs = processor_inputs(vlm, images)
    hidden = _lm_hidden_states(vlm, _forward(vlm, inputs, output_hidden_states=True))
    last = inputs["attention_mask"].sum(dim=1) - 1
    rows = torch.arange(3)
    assert max_diff(out["last_token"], torch.nn.functional.normalize(hidden[-1][rows, last], dim=-1)) <= TOL
    for layer in range(1, len(hidden)):
        reference = torch.nn.functional.normalize(hidden[layer][rows, last], dim=-1)
        assert max_diff(out[f"last_token@{layer}"], reference) <= TOL, layer


def test_left_and_right_padding_give_the_same_last_token(vlm):
    head = f"{vlm.image_token} " if vlm.arch.image_token_in_prompt else ""
    prompts = [f"{head}Represent the given image.", f"{head}Find this bird, please.", f"{head}A."]
    check_padding_sides_agree(vlm, _images(3, seed=6), prompts, TOL)


def test_texts_embed_alike_for_either_padding(vlm):
    texts = ["a bird", "the object species is great crested flycatcher.", "dog"]
    tokenizer = vlm.processor.tokenizer
    right = vlm.embed_texts(texts)
    tokenizer.padding_side = "left"
    try:
        left = vlm.embed_texts(texts)
    finally:
        tokenizer.padding_side = "right"
    assert np.abs(left - right).max() <= TOL
    assert np.abs(vlm.embed_texts(texts[1:2])[0] - right[1]).max() <= TOL


# -- batching, layers, specs, weights ----------------------------------------------------------


def test_batched_equals_one_at_a_time(vlm):
    check_batched_equals_single(vlm, _images(3, seed=7), [*vlm.kinds, "patch_mean@1", "last_token@1"],
                                TOL)


def test_vision_layers_are_the_towers_hidden_states(vlm):
    images = _images(2, seed=8)
    out = vlm(stacked(vlm, images), expand_layers(vlm.kinds.layers, "all", model=vlm.spec.name))
    inputs = processor_inputs(vlm, images)
    extra = {k: inputs[k] for k in vlm.arch.image_inputs}
    with torch.inference_mode():
        output = vlm.base.get_image_features(pixel_values=inputs["pixel_values"], **extra,
                                             output_hidden_states=True, return_dict=True)
    has_cls = "cls" in vlm.kinds.layers
    for layer in range(1, vlm.kinds.layers["patch_mean"].depth + 1):
        states = output.hidden_states[layer]
        states = states.reshape(2, -1, *states.shape[-2:]) if states.dim() == 3 else states.reshape(2, 1, -1, states.shape[-1])
        patches = states[:, :, 1:] if has_cls else states
        assert max_diff(out[f"patch_mean@{layer}"], patches.reshape(2, -1, patches.shape[-1]).mean(1)) <= TOL
        if has_cls:
            assert max_diff(out[f"cls@{layer}"], states[:, vlm.arch.global_tile, 0]) <= TOL


def test_specs_declare_the_loaded_kinds(vlm):
    spec = get_spec(vlm.spec.name)
    assert dict(spec.kinds) == dict(vlm.kinds) and spec.layers == vlm.kinds.layers
    assert get_spec(f"hf:{tiny_model_dir(vlm.spec.name)}").layers == spec.layers


def test_a_checkpoint_without_weights_is_one_line(vlm, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir(vlm.spec.name), broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError) as err:
        load_extractor(f"hf:{broken}")
    assert "\n" not in str(err.value)
