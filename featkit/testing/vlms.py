"""Checks every hf VLM's tests run on its tiny model: random images, the model's own processor
inputs for them, and the two properties each architecture must have (left and right padding give
the same ``last_token``; a batch equals its images one at a time). One copy, so each
architecture's test module states only what is particular to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: the image sizes :func:`random_images` cycles through (odd aspects, one square)
SIZES = ((20, 24), (24, 17), (16, 16), (30, 22))


def random_images(n: int, seed: int = 0, sizes: Sequence[tuple[int, int]] = SIZES) -> list:
    """``n`` seeded random RGB PIL images of the (height, width) ``sizes``, in turn."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((*sizes[i % len(sizes)], 3)) * 255).astype("uint8"))
            for i in range(n)]


def stacked(extractor: Any, images: Sequence[Any]):
    """The extractor's pixel batch of ``images`` (its transform, stacked)."""
    import torch

    return torch.stack([extractor.transform(image) for image in images])


def processor_inputs(vlm: Any, images: Sequence[Any], prompts: Sequence[str] | None = None,
                     **kwargs: Any) -> Any:
    """The processor's own inputs for ``images`` (cropped as the extractor crops them) and
    ``prompts`` (default: the extractor's image prompt for each)."""
    from extractors.hf_vlm import square_crop

    if vlm.square_crop_size:
        images = [square_crop(image, vlm.square_crop_size) for image in images]
    prompts = list(prompts or [vlm.prompt] * len(images))
    if vlm.architecture == "smolvlm":  # its processor takes a list of images per prompt
        images = [[image] for image in images]
    return vlm.processor(text=prompts, images=images, return_tensors="pt", **kwargs)


def max_diff(a: Any, b: Any) -> float:
    """The largest absolute difference of two tensors (or arrays)."""
    import torch

    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def check_padding_sides_agree(vlm: Any, images: Sequence[Any], prompts: Sequence[str],
                              tol: float) -> None:
    """Prompts of different lengths, padded left and then right, give the same ``last_token``
    (and first-block ``last_token@1``); one image alone gives its row of the padded batch."""
    tokenizer, results = vlm.processor.tokenizer, {}
    for side in ("left", "right"):
        tokenizer.padding_side = side
        try:
            inputs = processor_inputs(vlm, images, prompts, padding=True)
        finally:
            tokenizer.padding_side = "right"
        assert (inputs["attention_mask"] == 0).any(), "the prompts must need padding"
        results[side] = vlm.last_token_layers(inputs, blocks=[0])
    for key in (None, 0):
        assert max_diff(results["left"][key], results["right"][key]) <= tol, key
    single = vlm.last_token(processor_inputs(vlm, images[1:2], prompts[1:2]))
    assert max_diff(single[0], results["left"][None][1]) <= tol


def check_batched_equals_single(extractor: Any, images: Sequence[Any], kinds: Sequence[str],
                                tol: float) -> dict:
    """Every kind of a batch equals each image's alone; returns the batch's outputs."""
    batched = extractor(stacked(extractor, images), kinds)
    for i, image in enumerate(images):
        single = extractor(stacked(extractor, [image]), kinds)
        for kind in kinds:
            assert max_diff(batched[kind][i], single[kind][0]) <= tol, kind
    return batched
