"""Phi-4-multimodal on its tiny model (``test:tiny-phi4-multimodal``): every kind equals the
model's own calls on the same weights -- ``visual`` the tower's feature layer over every crop,
``aligned`` the HD layout (sub-image grid with row separators, global separator, global image)
projected and what the language model receives, ``last_token`` its forward -- padding sides
agree, a batch equals its images one at a time, a checkpoint without weights is a one-line
error, and messy image files give their RGB reference's features.
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
NAME = "test:tiny-phi4-multimodal"


@pytest.fixture(scope="module")
def vlm():
    return load_extractor(NAME)


#: this model's crop is larger than the generic tiny models'
SIZES = ((70, 80), (80, 66), (64, 64), (90, 72))


def _images(n: int, seed: int) -> list[Image.Image]:
    return random_images(n, seed, SIZES)


def _tower_states(vlm, inputs) -> tuple:
    """The tower's ``hidden_states`` of every crop of every image, called on its own."""
    pixels, mask = inputs["image_pixel_values"], inputs["image_attention_mask"]
    with torch.inference_mode():
        return vlm.images.tower(pixels.flatten(0, 1), patch_attention_mask=mask.flatten(0, 1).bool(),
                                output_hidden_states=True).hidden_states


def _hd_layout(vlm, states: torch.Tensor, n: int, rows: int, cols: int) -> torch.Tensor:
    """The HD order rebuilt from the module's parts: 2 x 2 average pool per crop, the sub-images
    as one grid with a separator ending each row, the global separator, the global image with
    its row separators; then the projection. ``(n, tokens, D)``."""
    embedding = vlm.images.embedding
    side = int(states.shape[1] ** 0.5)
    grid = states.reshape(len(states), side, side, -1).permute(0, 3, 1, 2)
    pooled = torch.nn.functional.avg_pool2d(grid, 2).permute(0, 2, 3, 1)  # (crops, s, s, D)
    s = pooled.shape[1]
    pooled = pooled.reshape(n, -1, s, s, pooled.shape[-1])
    row_sep = embedding.sub_img_feature_extensor.reshape(1, 1, -1)
    out = []
    for image in pooled:
        sub = image[1:].reshape(rows, cols, s, s, -1).permute(0, 2, 1, 3, 4).reshape(rows * s, cols * s, -1)
        sub = torch.cat([sub, row_sep.expand(rows * s, 1, -1)], dim=1).reshape(-1, sub.shape[-1])
        glob = torch.cat([image[0], row_sep.expand(s, 1, -1)], dim=1).reshape(-1, sub.shape[-1])
        out.append(torch.cat([sub, embedding.global_img_feature_extensor.reshape(1, -1), glob]))
    tokens = torch.stack(out)
    with torch.inference_mode():
        return embedding.img_projection_down(torch.nn.functional.gelu(embedding.img_projection_up(tokens)))


def test_the_tiny_model_has_two_by_two_sub_images(vlm):
    inputs = processor_inputs(vlm, _images(1, seed=0))
    assert inputs["image_pixel_values"].shape[:2] == (1, 5)  # the global image + 2 x 2 sub-images
    assert int((inputs["input_ids"] == vlm.images.image_token_id).sum()) == 32 * 32 + 32 + 1 + 16 * 16 + 16
    assert "cls" not in vlm.kinds and vlm.feature_layer == 1


def test_visual_is_the_feature_layer_over_every_crop(vlm):
    images = _images(3, seed=1)
    out = vlm(stacked(vlm, images), ["visual", "patch_mean@1", "patch_mean@2"])
    hidden = _tower_states(vlm, processor_inputs(vlm, images))
    layer = vlm.model.config.vision_config.feature_layer
    assert max_diff(out["visual"], hidden[layer].reshape(3, -1, hidden[layer].shape[-1]).mean(1)) <= TOL
    for index in (1, 2):
        states = hidden[index].reshape(3, -1, hidden[index].shape[-1])
        assert max_diff(out[f"patch_mean@{index}"], states.mean(1)) <= TOL
    assert max_diff(out["visual"], out["patch_mean@1"]) <= TOL  # layer -2 of 2 blocks


def test_aligned_is_the_projection_of_the_hd_layout(vlm):
    images = _images(2, seed=2)
    inputs = processor_inputs(vlm, images)
    layer = vlm.model.config.vision_config.feature_layer
    tokens = _hd_layout(vlm, _tower_states(vlm, inputs)[layer], 2, 2, 2)
    assert max_diff(vlm(stacked(vlm, images), ["aligned"])["aligned"], tokens.mean(1)) <= TOL


def test_aligned_is_what_the_language_model_receives(vlm):
    images = _images(2, seed=3)
    inputs = processor_inputs(vlm, images)
    captured = {}

    def hook(module, args, kwargs):
        captured["embeds"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = vlm.base.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            vlm.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    is_image = inputs["input_ids"] == vlm.images.image_token_id
    received = torch.stack([captured["embeds"][i][is_image[i]].mean(0) for i in range(2)])
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
    batched = check_batched_equals_single(vlm, _images(3, seed=6), [*vlm.kinds, "patch_mean@2", "last_token@1"], TOL)
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


def test_spec_declares_the_loaded_kinds(vlm):
    spec = get_spec(NAME)
    assert dict(spec.kinds) == dict(vlm.kinds) and spec.layers == vlm.kinds.layers


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


def test_a_local_checkpoint_lists_its_layers_without_loading():
    """Phi-4-multimodal's config.json has no text_config (the LM's keys are at the top): the
    layer kinds of ``hf:<dir>`` still come from it, equal to the loaded model's."""
    from extractors import get_spec, load_extractor
    from extractors.tiny import tiny_model_dir

    directory = tiny_model_dir("test:tiny-phi4-multimodal")
    spec = get_spec(f"hf:{directory}")
    loaded = load_extractor(f"hf:{directory}")
    assert spec.layers == loaded.kinds.layers
