"""VLM2Vec's checkpoints as TIGER-Lab publishes them: how its own code prompts and sizes
images per backbone, so a VLM2Vec checkpoint loaded by featkit embeds the way VLM2Vec does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Vlm2VecImage:
    """How VLM2Vec's own code sizes images for one backbone: ``processor_kwargs`` are passed to
    the backbone's processor (``from_pretrained``) as VLM2Vec's training and evaluation do;
    ``source`` says where VLM2Vec sets them."""

    processor_kwargs: Mapping[str, Any]
    source: str


#: VLM2Vec's processor pixel limits for Qwen-VL backbones (``resize_min_pixels`` /
#: ``resize_max_pixels`` defaults: 4 and 1280 merged 28 px tokens)
VLM2VEC_QWEN_PIXELS = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280}
_VLM2VEC_QWEN = Vlm2VecImage(
    {"size": VLM2VEC_QWEN_PIXELS},
    "src/arguments.py DataArguments.resize_min_pixels / resize_max_pixels, passed as the Qwen "
    "image processor's size in src/model/processor.py load_processor",
)
#: VLM2Vec backbone (its ``model_backbone`` name, featkit's architecture name where they
#: match) -> its image sizing; backbones absent use their processor's own defaults
VLM2VEC_IMAGE: dict[str, Vlm2VecImage] = {
    "phi3_v": Vlm2VecImage(
        {"num_crops": 4},
        "README train and eval commands for TIGER-Lab/VLM2Vec-Full (--num_crops 4; the "
        "argument's default is 16), passed to Phi3VProcessor in load_processor"),
    "qwen2_vl": _VLM2VEC_QWEN,
    "qwen2_5_vl": _VLM2VEC_QWEN,
}
