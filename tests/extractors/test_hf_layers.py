"""Layer kinds of the hf VLMs (``cls@L``, ``patch_mean@L``, ``last_token@L``) on the tiny models.

References: the vision tower called on its own with ``output_hidden_states=True``, and the whole
model with the LM head and all hidden states (VLM2Vec's way); one forward pass of each tower for
any layer list.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from extractors import get_spec, load_extractor  # noqa: E402
from extractors.hf import square_crop  # noqa: E402
from extractors.layers import expand_layers  # noqa: E402
from featkit.errors import UnknownNameError  # noqa: E402

TOL = 1e-5
MODELS = ["test:tiny-llava", "test:tiny-qwen2vl"]


def _images(n: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(20, 24), (24, 17), (16, 16)]
    return [Image.fromarray((rng.random((*sizes[i % 3], 3)) * 255).astype("uint8")) for i in range(n)]


def _batch(extractor, images):
    return torch.stack([extractor.transform(image) for image in images])


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


@pytest.fixture(scope="module", params=MODELS)
def vlm(request):
    return load_extractor(request.param)


def _all_layers(vlm) -> list[str]:
    return expand_layers(vlm.kinds.layers, "all", model=vlm.spec.name)


def _inputs(vlm, images):
    if vlm.square_crop_size:
        images = [square_crop(im, vlm.square_crop_size) for im in images]
    return vlm.processor(text=[vlm.prompt] * len(images), images=images, return_tensors="pt")


def test_specs_declare_the_loaded_layers(vlm):
    assert get_spec(vlm.spec.name).layers == vlm.kinds.layers
    assert vlm.kinds.layers["last_token"].depth == vlm.model.config.text_config.num_hidden_layers


def test_vision_layers_equal_the_towers_hidden_states(vlm):
    images = _images(3, seed=11)
    pixels = _batch(vlm, images)
    out = vlm(pixels, _all_layers(vlm))
    with torch.inference_mode():
        if vlm.architecture == "llava":
            hidden = vlm.base.vision_tower(pixels, output_hidden_states=True).hidden_states
            has_cls = True
        else:
            flat = pixels.reshape(-1, pixels.shape[-1])
            grid = torch.tensor([[1, 8, 8]] * 3)
            hidden = [h.reshape(3, 64, -1) for h in
                      vlm.base.visual(flat, grid_thw=grid, output_hidden_states=True).hidden_states]
            has_cls = False
    depth = vlm.kinds.layers["patch_mean"].depth
    assert len(hidden) == depth + 1
    for layer in range(1, depth + 1):
        patches = hidden[layer][:, 1:] if has_cls else hidden[layer]
        assert _max_diff(out[f"patch_mean@{layer}"], patches.mean(1)) <= TOL
        if has_cls:
            assert _max_diff(out[f"cls@{layer}"], hidden[layer][:, 0]) <= TOL


def test_the_models_own_kinds_are_layer_kinds(vlm):
    pixels = _batch(vlm, _images(2, seed=12))
    out = vlm(pixels, [*vlm.kinds, "patch_mean@-1", "last_token@-1", "patch_mean@-2"]
              + (["cls@-2"] if "cls" in vlm.kinds else []))
    assert _max_diff(out["last_token@-1"], out["last_token"]) <= TOL
    if vlm.architecture == "llava":  # LLaVA reads layer -2, CLS dropped
        assert _max_diff(out["cls@-2"], out["cls"]) <= TOL
        assert _max_diff(out["patch_mean@-2"], out["visual"]) <= TOL
    else:  # Qwen2-VL: the last block, before the merger
        assert _max_diff(out["patch_mean@-1"], out["visual"]) <= TOL


def test_last_token_layers_equal_the_lm_head_forward(vlm):
    images = _images(3, seed=13)
    out = vlm(_batch(vlm, images), _all_layers(vlm))
    inputs = _inputs(vlm, images)
    with torch.inference_mode():
        full = vlm.model(**inputs, output_hidden_states=True, use_cache=False)
    last = inputs["attention_mask"].sum(dim=1) - 1
    depth = vlm.kinds.layers["last_token"].depth
    assert len(full.hidden_states) == depth + 1
    for layer in range(1, depth + 1):
        reference = torch.nn.functional.normalize(full.hidden_states[layer][torch.arange(3), last], dim=-1)
        assert _max_diff(out[f"last_token@{layer}"], reference) <= TOL, layer
    assert _max_diff(out["last_token@1"], out[f"last_token@{depth}"]) > 1e-3


def test_last_token_layers_left_and_right_padding(vlm):
    images = _images(2, seed=14)
    if vlm.square_crop_size:
        images = [square_crop(im, vlm.square_crop_size) for im in images]
    prompts = [f"{vlm.image_token} Represent the given image.", f"{vlm.image_token} A."]
    tokenizer = vlm.processor.tokenizer
    results = {}
    for side in ("left", "right"):
        tokenizer.padding_side = side
        try:
            inputs = vlm.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = "right"
        results[side] = vlm.last_token_layers(inputs, blocks=[0, 1])
    for key in (None, 0, 1):
        assert _max_diff(results["left"][key], results["right"][key]) <= TOL


def test_one_pass_of_each_tower_for_every_layer(vlm):
    vision = vlm.base.vision_tower if vlm.architecture == "llava" else vlm.base.visual
    calls = {"vision": 0, "lm": 0}

    def count(name):
        def hook(*args):
            calls[name] += 1
        return hook

    handles = [vision.register_forward_hook(count("vision")),
               vlm.base.language_model.register_forward_hook(count("lm"))]
    try:
        out = vlm(_batch(vlm, _images(2)), [*vlm.kinds, *_all_layers(vlm)])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"vision": 1, "lm": 1}
    assert set(out) == {*vlm.kinds, *_all_layers(vlm)}


def test_layers_beyond_the_towers_are_refused(vlm):
    depth = vlm.kinds.layers["last_token"].depth
    with pytest.raises(UnknownNameError, match="no feature kind"):
        vlm(_batch(vlm, _images(1)), [f"last_token@{depth + 1}"])
    if "cls" not in vlm.kinds:
        with pytest.raises(UnknownNameError, match="no feature kind 'cls@1'"):
            vlm(_batch(vlm, _images(1)), ["cls@1"])


def test_a_local_directory_spec_reads_its_layers(tmp_path):
    from extractors.tiny import tiny_model_dir

    spec = get_spec(f"hf:{tiny_model_dir('test:tiny-llava')}")
    assert spec.layers == get_spec("test:tiny-llava").layers
    unknown = get_spec(f"hf:{tmp_path}")
    assert unknown.layers["last_token"].depth is None and "last_token@-3" in unknown.kinds


def test_every_layer_goes_through_the_cache(tmp_path):
    import featkit
    from extractors import layer_features

    kinds = layer_features("test:tiny-llava", "-1,1", ["visual", "last_token"])
    assert kinds == ["visual", "last_token", "cls@-1", "cls@1", "patch_mean@-1", "patch_mean@1",
                     "last_token@-1", "last_token@1"]
    featkit.extract("test:tiny-llava", "digits", splits=["val"], features=kinds, cache_dir=tmp_path,
                    progress=False, num_workers=0, batch_size=64)
    last = featkit.load("test:tiny-llava", "digits", "val", "last_token", cache_dir=tmp_path)
    last_layer = featkit.load("test:tiny-llava", "digits", "val", "last_token@-1", cache_dir=tmp_path)
    assert last.features.shape == (136, 48)
    assert float(abs(last.features - last_layer.features).max()) <= 1e-5
    assert featkit.load("test:tiny-llava", "digits", "val", "cls@1", cache_dir=tmp_path).features.shape == (136, 32)
