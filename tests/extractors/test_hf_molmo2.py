"""Molmo2 on its tiny model (``test:tiny-molmo2``): every kind equals the model's own calls on
the same weights -- ``visual`` the tower's configured layers over the patches the pooling reads,
``aligned`` the adapter (pooling cross-attention + projector) on them and what the language
model adds to its patch-token embeddings, ``last_token`` its forward -- padding sides agree, a
batch equals its images one at a time (the batch-global pooling indices), a checkpoint without
weights is a one-line error, and messy image files give their RGB reference's features.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

import featkit  # noqa: E402
from extractors import get_spec, load_extractor  # noqa: E402
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
NAME = "test:tiny-molmo2"


@pytest.fixture(scope="module")
def vlm():
    return load_extractor(NAME)


#: this model's crop is larger than the generic tiny models'
SIZES = ((40, 48), (48, 34), (32, 32), (60, 44))


def _images(n: int, seed: int) -> list[Image.Image]:
    return random_images(n, seed, SIZES)


def _per_image_patches(inputs, n: int) -> list[torch.Tensor]:
    """Each image's patch indices (into the batch's flattened patches) that the pooling reads."""
    pooling, tokens = inputs["image_token_pooling"], len(inputs["image_token_pooling"]) // n
    return [torch.unique(rows[rows >= 0]).long() for rows in pooling.split(tokens)]


def test_the_tiny_model_tiles_and_concatenates_layers(vlm):
    inputs = processor_inputs(vlm, _images(1, seed=0))
    assert inputs["image_num_crops"].tolist() == [5]  # 2 x 2 canvas of crops + the global view
    assert vlm.model.config.adapter_config.vision_feature_layer == [-1, 0]
    assert vlm.kinds["visual"] == 2 * vlm.tower.width and "cls" not in vlm.kinds


def test_batch_pooling_indices_are_the_processors(vlm):
    """The trap: one image's pooling indices repeated would pool the first image every time."""
    inputs = processor_inputs(vlm, _images(3, seed=1))
    built = vlm.images.batch_inputs(3)
    assert torch.equal(built["image_token_pooling"], inputs["image_token_pooling"].to(built["image_token_pooling"].dtype))
    assert torch.equal(built["image_grids"], inputs["image_grids"])


def test_visual_and_aligned_are_the_adapter_on_the_pooled_patches(vlm):
    images = _images(3, seed=2)
    out = vlm(stacked(vlm, images), ["visual", "aligned", "patch_mean@1", "patch_mean@2"])
    inputs = processor_inputs(vlm, images)
    base, layers = vlm.base, vlm.model.config.adapter_config.vision_feature_layer
    with torch.inference_mode():
        hidden = base.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
        concatenated = torch.cat([hidden[layer + 1 if layer >= 0 else layer] for layer in layers], dim=-1)
        adapted = base.multi_modal_projector(concatenated, inputs["image_token_pooling"]).last_hidden_state
        own = base.get_image_features(pixel_values=inputs["pixel_values"],
                                      image_token_pooling=inputs["image_token_pooling"],
                                      image_grids=inputs["image_grids"], return_dict=True)
    flat = concatenated.reshape(-1, concatenated.shape[-1])
    patches = _per_image_patches(inputs, 3)
    visual = torch.stack([flat[used].mean(0) for used in patches])
    assert max_diff(out["visual"], visual) <= TOL
    for layer in (1, 2):
        states = hidden[layer].reshape(-1, hidden[layer].shape[-1])
        assert max_diff(out[f"patch_mean@{layer}"], torch.stack([states[used].mean(0) for used in patches])) <= TOL
    # visual is blocks 2 and 1 side by side
    assert max_diff(out["visual"], torch.cat([out["patch_mean@2"], out["patch_mean@1"]], dim=-1)) <= TOL
    aligned = torch.stack([tokens.mean(0) for tokens in adapted.split(len(adapted) // 3)])
    assert max_diff(out["aligned"], aligned) <= TOL
    assert max_diff(out["aligned"], torch.stack([t.mean(0) for t in own.pooler_output])) <= TOL


def test_aligned_is_what_the_language_model_adds_to_the_patch_tokens(vlm):
    images = _images(2, seed=3)
    inputs = processor_inputs(vlm, images)
    captured = {}

    def hook(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = vlm.base.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            vlm.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    ids = inputs["input_ids"]
    added = captured["embeds"] - vlm.base.get_input_embeddings()(ids)
    is_patch = ids == vlm.model.config.image_patch_id
    received = torch.stack([added[i][is_patch[i]].mean(0) for i in range(2)])
    assert max_diff(vlm(stacked(vlm, images), ["aligned"])["aligned"], received) <= TOL


def test_last_token_and_its_layers_are_the_models_forward(vlm):
    images = _images(3, seed=4)
    out = vlm(stacked(vlm, images), ["last_token", "last_token@1", "last_token@2"])
    inputs = processor_inputs(vlm, images)
    with torch.inference_mode():
        hidden = vlm.model(**inputs, use_cache=False, output_hidden_states=True).hidden_states
    rows, last = torch.arange(3), inputs["attention_mask"].sum(dim=1) - 1
    normalize = torch.nn.functional.normalize
    assert max_diff(out["last_token"], normalize(hidden[-1][rows, last], dim=-1)) <= TOL
    for layer in (1, 2):
        assert max_diff(out[f"last_token@{layer}"], normalize(hidden[layer][rows, last], dim=-1)) <= TOL


def test_left_and_right_padding_give_the_same_last_token(vlm):
    prompts = [f"{vlm.image_token} Represent the given image.", f"{vlm.image_token} Find this bird.",
               f"{vlm.image_token} A."]
    check_padding_sides_agree(vlm, _images(3, seed=5), prompts, TOL)


def test_batched_equals_one_at_a_time(vlm):
    batched = check_batched_equals_single(vlm, _images(3, seed=6), [*vlm.kinds, "patch_mean@1", "patch_mean@-1", "last_token@1"], TOL)
    assert max_diff(batched["aligned"][0], batched["aligned"][1]) > 1e-3  # distinct images differ


def test_layer_lists_in_one_pass_equal_each_alone(vlm):
    pixels = stacked(vlm, _images(2, seed=7))
    kinds = ["patch_mean@1", "patch_mean@-1", "last_token@1", "last_token@-1"]
    together = vlm(pixels, kinds)
    for kind in kinds:
        assert max_diff(together[kind], vlm(pixels, [kind])[kind]) <= TOL, kind
    assert max_diff(together["last_token@-1"], vlm(pixels, ["last_token"])["last_token"]) <= TOL


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


def test_specs_declare_the_loaded_kinds(vlm):
    spec = get_spec(NAME)
    assert dict(spec.kinds) == dict(vlm.kinds) and spec.layers == vlm.kinds.layers
    assert get_spec(f"hf:{tiny_model_dir(NAME)}").layers == spec.layers


def test_a_checkpoint_without_weights_is_one_line(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir(NAME), broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError) as err:
        load_extractor(f"hf:{broken}")
    assert "\n" not in str(err.value)


def test_messy_images_give_their_rgb_references_features(tmp_path):
    from featkit.featureset import load_file
    from featkit.testing.images import write_messy_imagefolder

    cases = write_messy_imagefolder(tmp_path / "data")
    assert {"L", "P", "RGBA"} <= {case.mode for case, _, _ in cases}
    summary, = featkit.extract(NAME, "imagefolder", data_root=tmp_path / "data", splits=["test"],
                               cache_dir=tmp_path / "cache", progress=False, num_workers=0, device="cpu")
    assert summary.n == 2 * len(cases) and not summary.skipped
    for kind in ("visual", "aligned", "last_token"):
        fs = load_file(summary.path, kind)
        assert np.isfinite(fs.features).all()
        row = {sample_id: i for i, sample_id in enumerate(fs.sample_ids)}
        for case, messy_id, reference_id in cases:
            np.testing.assert_allclose(fs.features[row[messy_id]], fs.features[row[reference_id]],
                                       atol=TOL, err_msg=f"{kind} {case.name}")
