"""Image-space PGD through the tiny CLIP and a linear head: pixel box, budget, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featkit.errors import FeatkitError
from probes.image_attack import ImageProbe, attack_batch, image_eps_sweep, to_pixels


class LinearHead:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.bias = weight, bias

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T + self.bias


@pytest.fixture(scope="module")
def tiny():
    """The tiny CLIP, 48 normalised digit images, labels and a nearest-class-mean linear head
    fitted on 200 other images."""
    import extractors
    from featkit.datasets import open_dataset

    extractor = extractors.load_extractor("test:tiny-clip")
    samples = open_dataset("digits").samples("train")
    dataset = open_dataset("digits")

    def load(chosen):
        images = torch.stack([extractor.transform(dataset.load_image(s)) for s in chosen])
        return images, np.array([s.label for s in chosen])

    fit_images, fit_labels = load(samples[:200])
    images, labels = load(samples[200:248])
    with torch.no_grad():
        feats = extractor.forward(fit_images, ["visual"])["visual"]
    means = torch.stack([feats[torch.from_numpy(fit_labels == c)].mean(0) for c in range(10)])
    head = LinearHead(means, -0.5 * (means * means).sum(1))
    return extractor, images, labels, head


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pixels_stay_in_the_unit_box_and_within_eps(tiny, norm, eps):
    extractor, images, labels, head = tiny
    mean, std = extractor.pixel_normalization()
    model = ImageProbe(extractor.differentiable_features("visual"), head)
    torch.manual_seed(0)
    adv = attack_batch(model, images, torch.from_numpy(labels), mean=mean, std=std, eps=eps,
                       steps=4, alpha=eps, norm=norm, random_start=True)
    pixels, adv_pixels = to_pixels(images, mean, std), to_pixels(adv, mean, std)
    assert float(pixels.min()) < 1e-6  # digits have black pixels, so the box can bind
    assert float(adv_pixels.min()) >= -1e-6 and float(adv_pixels.max()) <= 1 + 1e-6
    delta = (adv_pixels - pixels).reshape(len(images), -1).double()
    norms = torch.linalg.vector_norm(delta, ord=np.inf if norm == "linf" else 2, dim=1)
    assert float(norms.max()) <= eps + 1e-6
    assert float(norms.max()) >= 0.9 * eps


def _reference_pixel_pgd(model, pixels, labels, mean, std, eps, alpha, steps, norm):
    """Plain PGD on [0, 1] pixels with the normalisation inside the model (no torchattacks)."""
    m = torch.tensor(mean).reshape(1, -1, 1, 1)
    s = torch.tensor(std).reshape(1, -1, 1, 1)
    adv = pixels.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model((adv - m) / s), labels)
        (grad,) = torch.autograd.grad(loss, adv)
        if norm == "linf":
            adv = adv.detach() + alpha * grad.sign()
            delta = (adv - pixels).clamp(-eps, eps)
        else:
            g = grad.reshape(len(adv), -1)
            adv = adv.detach() + alpha * (g / g.norm(dim=1, keepdim=True)).reshape(adv.shape)
            delta = adv - pixels
            length = delta.reshape(len(adv), -1).norm(dim=1).reshape(-1, 1, 1, 1)
            delta = delta * torch.clamp(eps / length, max=1.0)
        adv = (pixels + delta).clamp(0, 1).detach()
    return adv


@pytest.mark.parametrize("norm, eps, alpha", [("linf", 4 / 255, 1 / 255), ("l2", 0.3, 0.1)])
def test_torchattacks_path_equals_plain_pixel_pgd(tiny, norm, eps, alpha):
    """Checks the normalisation convention: the wrapped model takes normalised images."""
    extractor, images, labels, head = tiny
    mean, std = extractor.pixel_normalization()
    model = ImageProbe(extractor.differentiable_features("visual"), head)
    y = torch.from_numpy(labels)
    adv = attack_batch(model, images, y, mean=mean, std=std, eps=eps, alpha=alpha, steps=3,
                       norm=norm)
    expected = _reference_pixel_pgd(model, to_pixels(images, mean, std), y, mean, std, eps,
                                    alpha, 3, norm)
    got = to_pixels(adv, mean, std)
    assert float((got - expected).abs().max()) <= 1e-5
    moved = (got - to_pixels(images, mean, std)).reshape(len(got), -1)
    order = np.inf if norm == "linf" else 2
    assert float(torch.linalg.vector_norm(moved, ord=order, dim=1).max()) > 0.5 * min(eps, alpha)


def test_sweep_scores_the_probe_on_recomputed_features(tiny):
    extractor, images, labels, head = tiny
    mean, std = extractor.pixel_normalization()
    features = extractor.differentiable_features("visual")
    sweep, clean = image_eps_sweep(features, head, images, labels, [0.0, 2 / 255, 16 / 255],
                                   mean=mean, std=std, steps=4, batch_size=20, progress=False)
    with torch.no_grad():
        expected = extractor.forward(images, ["visual"])["visual"]
    np.testing.assert_allclose(clean, expected.numpy(), rtol=0, atol=1e-6)
    clean_pred = head.logits(expected).argmax(1).numpy()
    assert sweep.clean_top1 == pytest.approx(np.mean(clean_pred == labels))
    assert sweep.clean_top1 > 0.3  # the head works, so the attack has something to break
    zero, small, large = sweep.points
    assert zero.top1 == sweep.clean_top1 and zero.mean_delta_norm == 0.0
    for point in (small, large):
        assert point.max_delta_norm <= point.eps + 1e-6
        assert 0.0 <= point.pixel_range[0] + 1e-6 and point.pixel_range[1] <= 1 + 1e-6
        assert point.mean_loss_adv > point.mean_loss_clean
        assert point.mean_feature_shift > 0
    assert large.top1 < sweep.clean_top1 and large.success_rate > 0
    assert sweep.space == "image" and sweep.settings()["eps_units"] == "pixels in [0, 1]"


def test_targeted_sweep_moves_towards_the_targets(tiny):
    extractor, images, labels, head = tiny
    mean, std = extractor.pixel_normalization()
    sweep, _ = image_eps_sweep(extractor.differentiable_features("visual"), head, images[:16],
                               labels[:16], [0.0, 32 / 255], mean=mean, std=std, steps=5,
                               target="least-likely", progress=False)
    assert np.all(sweep.targets != labels[:16])
    assert sweep.points[1].success_rate > sweep.points[0].success_rate


def test_parameter_free_extractor_runs_through_its_own_forward():
    import extractors

    extractor = extractors.load_extractor("pixels:8")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(size=(6, 3, 8, 8)).astype(np.float32))
    labels = np.array([0, 1, 0, 1, 0, 1])
    head = LinearHead(torch.from_numpy(rng.normal(size=(2, 192)).astype(np.float32)),
                      torch.zeros(2))
    mean, std = extractor.pixel_normalization()
    assert mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0)
    sweep, _ = image_eps_sweep(extractor.differentiable_features("visual"), head, images, labels,
                               [0.05], mean=mean, std=std, steps=3, progress=False)
    point = sweep.points[0]
    # pixels are the features: an L-inf move of eps per pixel shifts features by <= eps*sqrt(192)
    assert 0 < point.mean_feature_shift <= 0.05 * np.sqrt(192) + 1e-5


def _features_without_gradients(images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return images.flatten(1)[:, :4] * 2


def test_feature_function_without_gradients_is_a_one_line_error():
    head = LinearHead(torch.eye(2, 4), torch.zeros(2))
    images = torch.rand(2, 3, 2, 2)
    with pytest.raises(FeatkitError, match="without gradients") as info:
        image_eps_sweep(_features_without_gradients, head, images, np.array([0, 1]), [0.1],
                        mean=(0, 0, 0), std=(1, 1, 1), steps=1, progress=False)
    assert "\n" not in str(info.value)


def test_images_normalised_with_other_statistics_are_rejected(tiny):
    extractor, images, labels, head = tiny
    mean, std = extractor.pixel_normalization()
    wrongly = (to_pixels(images, mean, std) - 0.5) / 0.1
    with pytest.raises(FeatkitError, match=r"not \[0, 1\]"):
        image_eps_sweep(extractor.differentiable_features("visual"), head, wrongly, labels, [0.01],
                        mean=mean, std=std, progress=False)

