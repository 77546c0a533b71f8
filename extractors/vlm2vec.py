"""VLM2Vec's checkpoints as TIGER-Lab publishes them, embedded the way VLM2Vec's own code does.

A VLM2Vec checkpoint is a VLM fine-tuned into an embedding model; its embeddings are only
VLM2Vec's when the image and the prompt reach the model as in VLM2Vec's evaluation
(``TIGER-AI-Lab/VLM2Vec``, ``eval.py`` with the flags of its published eval scripts). Per
backbone and release that is a :class:`Vlm2VecProtocol`:

- the prompt ``"<image token>\\n<instruction>\\n"`` (``process_input_text`` puts the backbone's
  image token and a space before the instruction; the image datasets then turn ``" \\n"`` into
  ``"\\n"`` and append ``"\\n"``, "to stay consistent with v1 eval");
- the image: v1's Qwen2-VL and LLaVA-NeXT checkpoints are evaluated with
  ``--resize_use_processor false --image_resolution high``, i.e. every image is stretched to
  1344 x 1344 (PIL ``resize``, no crop) before the processor; Phi-3.5-V's with ``--num_crops 4``
  and its processor's own HD transform; v2 (``VLM2Vec/VLM2Vec-V2.0``) lets the Qwen2-VL processor
  resize each image at its own aspect within its pixel limits;
- the processor's arguments (``processor_kwargs``): Qwen's pixel limits, Phi-3.5-V's crops.

Protocols exist only for the backbones VLM2Vec published checkpoints of (v1: Phi-3.5-V,
LLaVA-NeXT, Qwen2-VL; v2: Qwen2-VL, and Qwen2.5-VL, which its v2 code trains the same way).
One difference is kept: featkit decodes every image to RGB before the stretch, where VLM2Vec
stretches palette ("P") images in their own mode (nearest neighbour) and lets the processor
convert them; RGB files, as MMEB's are, give the same pixels.

The protocol applies when the checkpoint is recognised by name (:data:`CHECKPOINTS`: the hub
id, or a local directory of that name) or when the option ``vlm2vec=v1|v2`` asks for it; the
option ``vlm2vec=off`` embeds a VLM2Vec checkpoint the way featkit embeds any VLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from featkit.errors import FeatkitError

#: the option's values besides a release name
AUTO, OFF = "auto", "off"
RELEASES = ("v1", "v2")
#: VLM2Vec's eval prompt for an image with an instruction (see the module docstring)
PROMPT = "{image_token}\n{instruction}\n"
#: ``RESOLUTION_MAPPING["high"]`` of VLM2Vec's eval datasets
HIGH_RESOLUTION = 1344

#: VLM2Vec's processor pixel limits for Qwen-VL backbones (``resize_min_pixels`` /
#: ``resize_max_pixels`` defaults: 4 and 1280 merged 28 px tokens)
VLM2VEC_QWEN_PIXELS = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280}
_QWEN_SOURCE = ("src/arguments.py DataArguments.resize_min_pixels / resize_max_pixels, passed as "
                "the Qwen image processor's size in src/model/processor.py load_processor")


@dataclass(frozen=True)
class Vlm2VecImage:
    """How VLM2Vec's own code sizes images for one backbone: ``processor_kwargs`` are passed to
    the backbone's processor (``from_pretrained``) as VLM2Vec's training and evaluation do;
    ``source`` says where VLM2Vec sets them."""

    processor_kwargs: Mapping[str, Any]
    source: str


_VLM2VEC_QWEN = Vlm2VecImage({"size": VLM2VEC_QWEN_PIXELS}, _QWEN_SOURCE)
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


@dataclass(frozen=True)
class Vlm2VecProtocol:
    """How one VLM2Vec release embeds images on one backbone.

    ``stretch_to``: every image is resized to this square (aspect not kept) before the
    processor; ``native_resolution``: VLM2Vec gives the processor each image at its own size
    (featkit cannot batch images with different token counts, so it stretches them to the
    ``image_size`` square instead and says so in ``note``)."""

    release: str
    backbone: str
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    stretch_to: int | None = None
    native_resolution: bool = False
    note: str = ""

    def settings(self) -> dict[str, Any]:
        """What goes into the cache key's settings (and so into every record's provenance)."""
        return {"release": self.release, "backbone": self.backbone, "prompt": PROMPT,
                "processor_kwargs": dict(self.processor_kwargs), "stretch_to": self.stretch_to,
                "native_resolution": self.native_resolution, "note": self.note}


_NATIVE_NOTE = ("VLM2Vec-V2 gives the processor each image at its own size (within 4..1280 "
                "merged tokens); featkit stretches every image to one image_size square so a "
                "batch has one token count")
#: (release, featkit architecture / VLM2Vec backbone) -> protocol
PROTOCOLS: dict[tuple[str, str], Vlm2VecProtocol] = {
    ("v1", "phi3_v"): Vlm2VecProtocol("v1", "phi3_v", VLM2VEC_IMAGE["phi3_v"].processor_kwargs),
    ("v1", "llava_next"): Vlm2VecProtocol("v1", "llava_next", stretch_to=HIGH_RESOLUTION),
    ("v1", "qwen2_vl"): Vlm2VecProtocol("v1", "qwen2_vl", VLM2VEC_IMAGE["qwen2_vl"].processor_kwargs,
                                        stretch_to=HIGH_RESOLUTION),
    ("v2", "qwen2_vl"): Vlm2VecProtocol("v2", "qwen2_vl", VLM2VEC_IMAGE["qwen2_vl"].processor_kwargs,
                                        native_resolution=True, note=_NATIVE_NOTE),
    ("v2", "qwen2_5_vl"): Vlm2VecProtocol("v2", "qwen2_5_vl",
                                          VLM2VEC_IMAGE["qwen2_5_vl"].processor_kwargs,
                                          native_resolution=True, note=_NATIVE_NOTE),
}

#: the published checkpoints (repository name, lower case) -> (release, backbone); full
#: fine-tunes and LoRA repositories alike (the latter load as base model + adapter)
CHECKPOINTS: dict[str, tuple[str, str]] = {
    "tiger-lab/vlm2vec-full": ("v1", "phi3_v"),  # full fine-tune (remote code)
    "tiger-lab/vlm2vec-lora": ("v1", "phi3_v"),
    "tiger-lab/vlm2vec-llava-next": ("v1", "llava_next"),
    "tiger-lab/vlm2vec-llava-v1.6-lora": ("v1", "llava_next"),
    "tiger-lab/vlm2vec-qwen2vl-2b": ("v1", "qwen2_vl"),
    "tiger-lab/vlm2vec-qwen2vl-7b": ("v1", "qwen2_vl"),
    "vlm2vec/vlm2vec-v2.0": ("v2", "qwen2_vl"),
}
_BY_NAME = {repo.rpartition("/")[2]: entry for repo, entry in CHECKPOINTS.items()}


def recognised(names: Sequence[str | None]) -> tuple[str, str] | None:
    """(release, backbone) of the first of ``names`` that is a published VLM2Vec checkpoint:
    a hub id in :data:`CHECKPOINTS` (exactly: another owner's repository of that name is not
    it), or an existing local directory of a repository's name (where ``hf download
    --local-dir`` or a copy puts it)."""
    for name in names:
        if not name:
            continue
        lowered = str(name).lower().rstrip("/")
        if lowered in CHECKPOINTS:
            return CHECKPOINTS[lowered]
        if Path(str(name)).expanduser().is_dir() and PurePath(lowered).name in _BY_NAME:
            return _BY_NAME[PurePath(lowered).name]
    return None


def protocol_for(option: str, architecture: str, names: Sequence[str | None],
                 model: str) -> Vlm2VecProtocol | None:
    """The protocol a load applies: the ``vlm2vec`` option (``auto``: by name, ``off``, or a
    release) for a model of featkit architecture ``architecture``; None: featkit's own way.
    ``auto`` applies it to a checkpoint whose name and architecture are a published one's (a
    directory of that name holding another architecture is not that checkpoint); a release asked
    for on a backbone VLM2Vec does not have is a one-line error."""
    if option not in (AUTO, OFF, *RELEASES):
        raise FeatkitError(f"option vlm2vec={option!r} for {model}: expected one of "
                           f"{', '.join((AUTO, OFF, *RELEASES))}")
    if option == OFF:
        return None
    if option == AUTO:
        found = recognised(names)
        if found is None or found[1] != architecture:
            return None
        release = found[0]
    else:
        release = option
    protocol = PROTOCOLS.get((release, architecture))
    if protocol is None:
        backbones = sorted(b for r, b in PROTOCOLS if r == release)
        raise FeatkitError(
            f"{model}'s architecture is {architecture} and VLM2Vec {release} has no such backbone "
            f"({', '.join(backbones)}); pass --option vlm2vec=off to embed it featkit's way")
    return protocol
