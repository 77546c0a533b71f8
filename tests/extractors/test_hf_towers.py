"""transformers dual encoders (CLIPModel, Siglip2Model NaFlex) on their tiny models: the kinds
equal the library's own calls (``vision_model``, ``get_image_features``) on processor inputs,
layer kinds are the tower's ``hidden_states``, batched equals one at a time."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from extractors import get_spec, load_extractor  # noqa: E402
from extractors.hf import square_crop  # noqa: E402
from extractors.layers import expand_layers  # noqa: E402
from extractors.tiny import tiny_model_dir  # noqa: E402
from featkit.errors import FeatkitError  # noqa: E402

TOL = 1e-5
MODELS = ["test:tiny-hf-clip", "test:tiny-siglip2"]


@pytest.fixture(scope="module", params=MODELS)
def tower(request):
    return load_extractor(request.param)


def _images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((18 + 3 * i, 24 - i, 3)) * 255).astype("uint8")) for i in range(n)]


def _library_inputs(tower, images):
    if tower.square_crop_size:
        images = [square_crop(im, tower.square_crop_size) for im in images]
    return dict(tower.image_processor(images=images, return_tensors="pt"))


def _max_diff(a, b) -> float:
    return float((a - b).abs().max())


def test_kinds_equal_the_librarys_calls(tower):
    images = _images(3)
    pixels = torch.stack([tower.transform(im) for im in images])
    kinds = [*tower.kinds, *expand_layers(tower.kinds.layers, "all", model=tower.spec.name),
             *expand_layers(tower.kinds.layers, (-1,), model=tower.spec.name)]
    out = tower(pixels, kinds)
    inputs = _library_inputs(tower, images)
    with torch.inference_mode():
        vision = tower.model.vision_model(**inputs, output_hidden_states=True)
        aligned = tower.model.get_image_features(**inputs).pooler_output
    assert _max_diff(out["visual"], vision.pooler_output) <= TOL
    assert _max_diff(out["aligned"], aligned) <= TOL
    start = 1 if "cls" in tower.kinds else 0
    mask = inputs.get("pixel_attention_mask")
    for layer in range(1, tower.kinds.layers["patch_mean"].depth + 1):
        states = vision.hidden_states[layer][:, start:]
        if mask is not None:
            assert bool(mask.all())  # a square fills the patch grid
        assert _max_diff(out[f"patch_mean@{layer}"], states.mean(1)) <= TOL
        if start:
            assert _max_diff(out[f"cls@{layer}"], vision.hidden_states[layer][:, 0]) <= TOL
    assert _max_diff(out["patch_mean"], vision.last_hidden_state[:, start:].mean(1)) <= TOL
    if "cls" in tower.kinds:  # CLIP: the raw class token, before post_layernorm
        assert torch.equal(out["cls@-1"], out["cls"]) and torch.equal(out["patch_mean@-1"], out["patch_mean"])
        assert _max_diff(tower.model.vision_model.post_layernorm(out["cls"]), out["visual"]) <= TOL
    else:  # SigLIP: no projection
        assert torch.equal(out["aligned"], out["visual"])


def test_batched_equals_one_at_a_time(tower):
    images = _images(3, seed=1)
    batched = tower(torch.stack([tower.transform(im) for im in images]), list(tower.kinds))
    for i, image in enumerate(images):
        single = tower(tower.transform(image)[None], list(tower.kinds))
        for kind in tower.kinds:
            assert _max_diff(batched[kind][i], single[kind][0]) <= TOL


def test_specs_and_local_directories(tower):
    spec = get_spec(tower.spec.name)
    assert dict(spec.kinds) == dict(tower.kinds) and spec.layers == tower.kinds.layers
    local = get_spec(f"hf:{tiny_model_dir(tower.spec.name)}")
    assert local.layers == spec.layers and "last_token" not in local.layers


def test_image_space_attacks_through_clip_not_naflex():
    clip = load_extractor("test:tiny-hf-clip")
    pixels = torch.stack([clip.transform(im) for im in _images(2)]).requires_grad_(True)
    features = clip.differentiable_features("aligned")(pixels)
    features.sum().backward()
    assert pixels.grad is not None and float(pixels.grad.abs().sum()) > 0
    assert _max_diff(features.detach(), clip(pixels.detach(), ["aligned"])["aligned"]) <= TOL
    with pytest.raises(FeatkitError, match="not supported"):
        load_extractor("test:tiny-siglip2").differentiable_features("visual")
    with pytest.raises(FeatkitError, match="fixes its input size"):
        load_extractor("test:tiny-hf-clip", options={"image_size": 32})
