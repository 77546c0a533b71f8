"""The extractor base interface every family implements: differentiable features for image-space
attacks and the pixel normalisation, declared rather than dug out of the model or transform."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from extractors import load_extractor  # noqa: E402
from featkit.errors import FeatkitError, UnknownNameError  # noqa: E402

#: one model per tower layout / family that supports image-space gradients
DIFFERENTIABLE = ["test:tiny-clip", "test:tiny-eva", "test:tiny-siglip", "test:tiny-dinov2", "pixels:8",
                  "test:tiny-hf-clip", "test:tiny-beit3"]


@pytest.fixture(scope="module", params=DIFFERENTIABLE)
def extractor(request):
    return load_extractor(request.param)


def _images(extractor, n: int = 3) -> torch.Tensor:
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)) for _ in range(n)]
    return torch.stack([extractor.transform(p) for p in pictures])


def _normalize_step(transform):
    """The torchvision ``Normalize`` inside a (possibly wrapped) ``Compose``."""
    from torchvision.transforms import Compose, Normalize

    from extractors.single_thread import SingleThreadTransform

    if isinstance(transform, SingleThreadTransform):
        transform = transform.transform
    assert isinstance(transform, Compose)
    (step,) = [t for t in transform.transforms if isinstance(t, Normalize)]
    return step


def test_differentiable_features_equal_forward_and_carry_gradients(extractor):
    images = _images(extractor)
    for kind in extractor.kinds:
        features = extractor.differentiable_features(kind)
        with torch.no_grad():
            expected = extractor(images, [kind])[kind]
            got = features(images)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-5, kind
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(features(x).square().sum(), x)  # LayerNorm: plain sum is flat
        assert float(grad.abs().sum()) > 0, kind


def test_pixel_normalization_equals_the_transforms_normalize(extractor):
    from extractors.hf_vlm import ImageTransform

    mean, std = extractor.pixel_normalization()
    if isinstance(extractor.transform, ImageTransform):  # a transformers image processor
        processor = extractor.transform.image_processor
        expected_mean, expected_std = processor.image_mean, processor.image_std
    else:
        step = _normalize_step(extractor.transform)
        expected_mean, expected_std = step.mean, step.std
    np.testing.assert_allclose(mean, np.ravel(expected_mean), rtol=0, atol=1e-7)
    np.testing.assert_allclose(std, np.ravel(expected_std), rtol=0, atol=1e-7)
    assert all(isinstance(v, float) for v in (*mean, *std)) and len(mean) == len(std) == 3


def test_unknown_kind_is_a_one_line_error(extractor):
    with pytest.raises(UnknownNameError, match="no feature kind 'patch'") as info:
        extractor.differentiable_features("patch")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model", ["test:tiny-llava", "test:tiny-qwen2vl"])
def test_vlms_refuse_image_space_attacks_and_declare_their_normalization(model):
    pytest.importorskip("transformers")
    vlm = load_extractor(model)
    with pytest.raises(FeatkitError, match="image-space attacks are not supported") as info:
        vlm.differentiable_features("visual")
    assert "--space feature" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UnknownNameError, match="no feature kind 'patch'"):
        vlm.differentiable_features("patch")
    image_processor = vlm.processor.image_processor
    assert vlm.pixel_normalization() == (tuple(image_processor.image_mean), tuple(image_processor.image_std))
