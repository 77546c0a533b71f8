"""The ``test`` family: tiny, seeded, randomly initialised models of the real families' shapes.

They run offline in seconds, so tests, ``featkit demo`` and the notebooks exercise the real
loading and feature code paths. Their weights are random *by design* (weights identity
``random:seed<N>``) and fixed: other tests' reference values depend on them. Each tiny model
declares the options (and adapter support) of the family it mimics, and loads through that
family's own code; this module holds every tiny model, so the family modules hold only the
real loading code.

The VLMs are written as complete ``save_pretrained`` directories (config, weights, tokenizer,
processor) that load back with ``AutoModelForImageTextToText`` / ``AutoProcessor``; their
writers live in :mod:`extractors.tiny_vlms` (``build_tiny_<architecture>``).
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from extractors import register, tiny_vlms, tiny_vlms_more
from extractors.base import Extractor, ExtractorSpec, Family, OptionSpec, Preprocessing
from extractors.hf import CLIP_MEAN, CLIP_STD, HFFamily, load_hf_vlm
from extractors.hf_weights import base_model_reference, resolve_weights
from extractors.layers import LayerSpan
from extractors.open_clip import (
    NO_PROJECTION_NOTE,
    OPENAI_MEAN,
    OPENAI_STD,
    OpenClipExtractor,
    OpenClipFamily,
    build_visual,
    load_visual_weights,
    preprocess_cfg,
)
from extractors.open_clip import user_weights as open_clip_weights
from extractors.timm import TimmExtractor, TimmFamily, create_model, data_config, image_size_option
from extractors.timm import user_weights as timm_weights
from extractors.tiny_vlms import build_tiny_llava, build_tiny_qwen2vl
from featkit.errors import UnknownNameError

Loader = Callable[..., Extractor]


@dataclasses.dataclass(frozen=True)
class _Tiny:
    spec: ExtractorSpec
    loader: Loader
    options: tuple[OptionSpec, ...]
    accepts_adapter: bool


_TINY: dict[str, _Tiny] = {}


def register_tiny(
    spec: ExtractorSpec, mimics: type[Family], defaults: Mapping[str, Any] | None = None
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(spec, *, weights, adapter, device, precision, options)`` for
    ``spec``, a tiny model of family ``mimics`` (its options, with ``defaults`` overriding theirs,
    and its adapter support)."""
    if not spec.name.startswith("test:"):
        raise ValueError(f"tiny model ids start with 'test:', got {spec.name}")
    defaults = dict(defaults or {})
    options = tuple(dataclasses.replace(o, default=defaults.pop(o.name, o.default)) for o in mimics.options)
    if defaults:
        raise ValueError(f"{spec.name}: {mimics.name} declares no option {', '.join(defaults)}")

    def deco(loader: Loader) -> Loader:
        _TINY[spec.name] = _Tiny(spec, loader, options, mimics.accepts_adapter)
        return loader

    return deco


@register
class TinyFamily(Family):
    name = "test"

    def specs(self) -> list[ExtractorSpec]:
        return [tiny.spec for tiny in _TINY.values()]

    def options_for(self, spec: ExtractorSpec) -> tuple[OptionSpec, ...]:
        return _TINY[spec.name].options

    def accepts_adapter_for(self, spec: ExtractorSpec) -> bool:
        return _TINY[spec.name].accepts_adapter

    def adapter_models(self) -> list[str]:
        return [name for name, tiny in _TINY.items() if tiny.accepts_adapter]

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32", options=None):
        return _TINY[spec.name].loader(spec, weights=weights, adapter=adapter, device=device,
                                       precision=precision, options=dict(options or {}))

    def weights_available(self, spec) -> bool:
        return True


# -- open_clip towers -----------------------------------------------------------------------------

_TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
#: open_clip model configs of the tiny test towers (full CLIP configs, so tests can build the
#: library's own model around the same tower).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "test:tiny-eva": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_tiny_patch14_224",
                       "timm_pool": "token", "timm_proj": None},
        "text_cfg": dict(_TINY_TEXT),
    },
    "test:tiny-siglip": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "timm_model_name": "featkit_tiny_siglip_vit",
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": dict(_TINY_TEXT),
    },
}


def featkit_tiny_siglip_vit(pretrained: bool = False, **kwargs):
    """A SigLIP-shaped timm ViT (no class token, MAP pooling), 2 blocks of width 32 at 32 px."""
    from timm.models import build_model_with_cfg
    from timm.models.vision_transformer import VisionTransformer

    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
            "class_token": False, "global_pool": "map"}
    args.update(kwargs)
    if not args.get("pretrained_cfg"):  # no published weights; a config keeps timm from warning
        args["pretrained_cfg"] = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                                  "num_classes": 0, "crop_pct": 1.0}
    return build_model_with_cfg(VisionTransformer, "featkit_tiny_siglip_vit", pretrained, **args)


def ensure_tiny_timm_arch() -> None:
    import timm
    from timm.models import register_model

    if not timm.is_model("featkit_tiny_siglip_vit"):
        register_model(featkit_tiny_siglip_vit)


#: The tiny towers' preprocessing, as a tag would give it (overlay on open_clip's defaults).
TINY_PREPROCESS: dict[str, dict[str, Any]] = {
    "test:tiny-eva": {},
    "test:tiny-siglip": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "resize_mode": "squash"},
}

TINY_EVA = ExtractorSpec(
    name="test:tiny-eva",
    family="test",
    kinds={"visual": 192, "aligned": 64, "patch_mean": 192},
    preprocessing=Preprocessing(size=224, mean=OPENAI_MEAN, std=OPENAI_STD, resize_mode="shortest"),
    weights="random",
    description="open_clip timm-trunk tower of EVA02 shape (eva02_tiny_patch14_224, classifier = "
    "projection), seeded random init",
    notes="random weights by design",
    layers={"cls": LayerSpan(12, 192), "patch_mean": LayerSpan(12, 192)},
)
TINY_SIGLIP = ExtractorSpec(
    name="test:tiny-siglip",
    family="test",
    kinds={"visual": 32, "aligned": 32, "patch_mean": 32},
    preprocessing=Preprocessing(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash"),
    weights="random",
    description="open_clip SigLIP-style tower (timm ViT, MAP pooling, no projection), 32 px, seeded random init",
    notes=f"random weights by design; {NO_PROJECTION_NOTE}",
    layers={"patch_mean": LayerSpan(2, 32)},
)


def _load_tiny_tower(spec: ExtractorSpec, *, weights=None, adapter=None, device="cpu", precision="fp32",
                     options=None):
    """Seeded tower of a tiny config; ``weights`` loads a checkpoint through the family's path."""
    import torch

    ensure_tiny_timm_arch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        visual = build_visual(TINY_CONFIGS[spec.name])
    identity = "random:seed0"
    if weights:
        path, identity, _ = open_clip_weights(weights, TINY_CONFIGS[spec.name])
        load_visual_weights(visual, path)
    pre = preprocess_cfg(TINY_CONFIGS[spec.name], TINY_PREPROCESS[spec.name])
    return OpenClipExtractor(spec, visual, preprocessing=pre,
                             weights_identity=identity, device=device, precision=precision)


register_tiny(TINY_EVA, OpenClipFamily)(_load_tiny_tower)
register_tiny(TINY_SIGLIP, OpenClipFamily)(_load_tiny_tower)

TINY_CLIP = ExtractorSpec(
    name="test:tiny-clip",
    family="test",
    kinds={"visual": 32, "aligned": 16},
    preprocessing=Preprocessing(size=32, mean=OPENAI_MEAN, std=OPENAI_STD, resize_mode="shortest", interpolation="bicubic"),
    weights="random",
    description="tiny open_clip ViT (2 layers, width 32, 32 px), seeded random init, for tests and the demo",
    notes="random weights by design",
    layers={"cls": LayerSpan(2, 32), "patch_mean": LayerSpan(2, 32)},
)


#: The tiny CLIP's full config (its seeded weights are other tests' fixtures: keep it stable).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": dict(_TINY_TEXT),
}


@register_tiny(TINY_CLIP, OpenClipFamily)
def load_tiny_clip(spec: ExtractorSpec, *, weights=None, adapter=None, device="cpu", precision="fp32",
                   options=None):
    """Build the tiny CLIP with a fixed seed so every process gets the same weights."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    identity = "random:seed0"
    if weights:
        path, identity, _ = open_clip_weights(weights, TINY_CLIP_CONFIG)
        load_visual_weights(model.visual, path)
    pre = spec.preprocessing
    return OpenClipExtractor(
        spec,
        model.visual,
        preprocessing=pre.to_dict(),
        weights_identity=identity,
        device=device,
        precision=precision,
        transform=open_clip.image_transform(pre.size, is_train=False, mean=pre.mean, std=pre.std,
                                            resize_mode=pre.resize_mode, interpolation=pre.interpolation),
    )


# -- timm DINOv2 ----------------------------------------------------------------------------------

#: Architecture overrides of the tiny DINOv2-style ViT (patch 14, layer scale, class token).
TINY_DINOV2_KWARGS: dict[str, Any] = {"img_size": 42, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_DINOV2_NAME = "vit_small_patch14_dinov2.lvd142m"

TINY_DINOV2 = ExtractorSpec(
    name="test:tiny-dinov2",
    family="test",
    kinds={"visual": 32, "cls": 32, "patch_mean": 32},
    preprocessing=Preprocessing(size=42, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                resize_mode="shortest", interpolation="bicubic", crop_pct=1.0),
    weights="random",
    description="timm DINOv2-style ViT (vit_small_patch14_dinov2 shape: 2 blocks, width 32, 42 px), "
    "seeded random init",
    notes="random weights by design; visual is the class token (token pooling), the same as cls",
    layers={"cls": LayerSpan(2, 32), "patch_mean": LayerSpan(2, 32)},
)


#: A tiny BEiT-3 (timm's beit3 ViT: class token, average pooling through fc_norm).
TINY_BEIT3_KWARGS: dict[str, Any] = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                                     "num_heads": 2}
TINY_BEIT3 = ExtractorSpec(
    name="test:tiny-beit3",
    family="test",
    kinds={"visual": 32, "cls": 32, "patch_mean": 32},
    preprocessing=Preprocessing(size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                resize_mode="shortest", interpolation="bicubic", crop_pct=1.0),
    weights="random",
    description="timm BEiT-3 ViT (beit3_base_patch16_224 shape: 2 blocks, width 32, patch 8, 32 px), "
    "seeded random init",
    notes="random weights by design; visual is the fc_norm'd patch mean",
    layers={"cls": LayerSpan(2, 32), "patch_mean": LayerSpan(2, 32)},
)
#: tiny timm test models: id -> (timm name, architecture overrides)
_TINY_TIMM: dict[str, tuple[str, dict[str, Any]]] = {
    TINY_DINOV2.name: (TINY_DINOV2_NAME, TINY_DINOV2_KWARGS),
    TINY_BEIT3.name: ("beit3_base_patch16_224", TINY_BEIT3_KWARGS),
}


@register_tiny(TINY_BEIT3, TimmFamily)
@register_tiny(TINY_DINOV2, TimmFamily)
def load_tiny_timm(spec: ExtractorSpec, *, weights=None, adapter=None, device="cpu", precision="fp32",
                   options=None):
    """Seeded tiny timm model; ``weights`` loads a checkpoint through timm's pretrained path, and
    the ``image_size`` option runs it at another size, as for any timm model."""
    import torch

    identity = "random:seed0"
    path = None
    if weights:
        path, identity = timm_weights(weights)
    image_size = image_size_option(options)
    name, overrides = _TINY_TIMM[spec.name]
    kwargs = {**overrides, "img_size": image_size or overrides["img_size"]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, path, **kwargs)
    return TimmExtractor(spec, model, data_cfg=data_config(model, kwargs["img_size"]),
                         weights_identity=identity, device=device, precision=precision,
                         settings={"image_size": image_size} if image_size else {})


# -- VLMs (the hf family's code on save_pretrained directories written here) ----------------------

_TINY_DIRS: dict[str, Path] = {}
_TINY_ROOT: list[Path] = []

TINY_LLAVA = ExtractorSpec(
    name="test:tiny-llava",
    family="test",
    kinds={"visual": 32, "cls": 32, "aligned": 48, "last_token": 48},
    preprocessing=Preprocessing(size=16, mean=CLIP_MEAN, std=CLIP_STD, resize_mode="shortest", interpolation="bicubic"),
    weights="random",
    description="tiny LLaVA (CLIP tower 16 px, layer -2, CLS dropped; MLP projector; 2-layer Llama), "
                "seeded random init, for tests and the demo",
    notes="random weights by design",
    default_kinds=("visual", "aligned", "last_token"),
    layers={"cls": LayerSpan(3, 32), "patch_mean": LayerSpan(3, 32), "last_token": LayerSpan(2, 48)},
)

TINY_QWEN2VL = ExtractorSpec(
    name="test:tiny-qwen2vl",
    family="test",
    kinds={"visual": 32, "aligned": 48, "last_token": 48},
    preprocessing=Preprocessing(size=32, mean=CLIP_MEAN, std=CLIP_STD, resize_mode="shortest", interpolation="bicubic"),
    weights="random",
    description="tiny Qwen2-VL (2-block ViT, 32 px square -> 8x8 patches -> 16 merged tokens; "
                "2-layer M-RoPE LM), seeded random init, for tests and the demo",
    notes="random weights by design",
    default_kinds=("visual", "aligned", "last_token"),
    layers={"patch_mean": LayerSpan(2, 32), "last_token": LayerSpan(2, 48)},
)

def tiny_model_dir(model: str = "test:tiny-llava") -> Path:
    """The ``save_pretrained`` directory of a tiny VLM, built once per process (seed 0).

    Use it as a base for adapters or as ``--weights``; treat it as read-only.
    """
    if model not in _TINY_BUILDERS:
        raise UnknownNameError(f"no tiny VLM {model!r} (have: {', '.join(_TINY_BUILDERS)})")
    if model not in _TINY_DIRS:
        if not _TINY_ROOT:
            _TINY_ROOT.append(Path(tempfile.mkdtemp(prefix="featkit-tiny-vlm-")))
            atexit.register(shutil.rmtree, _TINY_ROOT[0], True)
        _TINY_DIRS[model] = _TINY_BUILDERS[model](_TINY_ROOT[0] / model.partition(":")[2])
    return _TINY_DIRS[model]


def _load_tiny_vlm(spec, *, weights=None, adapter=None, device="cpu", precision="fp32", options=None):
    if weights:
        path, identity, adapter = resolve_weights(spec.name, weights, adapter)
        reference = base_model_reference(spec.name, weights)
    else:
        path, identity, reference = tiny_model_dir(spec.name), "random:seed0", spec.name
    return load_hf_vlm(spec, path, weights_identity=identity, adapter=adapter, device=device,
                       precision=precision, options=options, quiet=True, base_model_reference=reference)


register_tiny(TINY_LLAVA, HFFamily)(_load_tiny_vlm)
register_tiny(TINY_QWEN2VL, HFFamily, defaults={"image_size": 32})(_load_tiny_vlm)

SIGLIP_MEAN = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: the other architectures' tiny models: name -> (description, input size, mean, std,
#: class-token tower, extra kinds, default options); each has 2 vision and 2 LM blocks, vision
#: width 32, LM width 48, and is written by ``tiny_vlms.build_tiny_<name>``
_TINY_VLMS: dict[str, tuple[str, int, tuple, tuple, bool, dict[str, int], dict[str, Any]]] = {
    "llava_next": ("LLaVA-NeXT (CLIP tiles of 8 px; a 16 px square: 2x2 tiles + base image, "
                   "packed with newline tokens; Llama)", 16, CLIP_MEAN, CLIP_STD, True, {}, {}),
    "llava_onevision": ("LLaVA-OneVision (SigLIP tiles of 8 px, 2x2 + base image; Qwen2)", 16,
                        SIGLIP_MEAN, SIGLIP_MEAN, False, {}, {}),
    "internvl": ("InternVL 2.5/3 (InternViT 16 px tile, pixel shuffle 0.5, MLP projector; Qwen2)",
                 16, IMAGENET_MEAN, IMAGENET_STD, True, {}, {}),
    "idefics3": ("Idefics3 (SigLIP-style tower; a 32 px square: 2x2 tiles of 16 px + global "
                 "image; pixel-shuffle connector; Llama)", 32, SIGLIP_MEAN, SIGLIP_MEAN, False, {}, {}),
    "smolvlm": ("SmolVLM (the Idefics3 layout: SigLIP-style tower; a 32 px square: 2x2 tiles of "
                "16 px + global image; pixel-shuffle connector; Llama)", 32, SIGLIP_MEAN,
                SIGLIP_MEAN, False, {}, {}),
    "paligemma": ("PaliGemma (SigLIP 16 px, linear projector, Gemma with prefix attention)", 16,
                  SIGLIP_MEAN, SIGLIP_MEAN, False, {}, {}),
    "blip2": ("BLIP-2 (EVA-style ViT 16 px, 1-layer Q-Former with 4 queries, language "
              "projection; OPT)", 16, CLIP_MEAN, CLIP_STD, True, {"qformer": 32}, {}),
    "qwen2_5_vl": ("Qwen2.5-VL (window-attention ViT, 32 px square -> 8x8 patches -> 16 merged "
                   "tokens; M-RoPE Qwen2.5)", 32, CLIP_MEAN, CLIP_STD, False, {}, {"image_size": 32}),
    "qwen3_vl": ("Qwen3-VL (ViT with DeepStack, 32 px square -> 16 merged tokens; interleaved "
                 "M-RoPE Qwen3)", 32, CLIP_MEAN, CLIP_STD, False, {}, {"image_size": 32}),
}


def _tiny_vlm_spec(name: str) -> ExtractorSpec:
    description, size, mean, std, has_cls, extra, _ = _TINY_VLMS[name]
    vision = LayerSpan(2, 32)
    layers = {"cls": vision} if has_cls else {}
    return ExtractorSpec(
        name=f"test:tiny-{name.replace('_', '-') if name.startswith('llava') else name}",
        family="test",
        kinds={"visual": 32, **({"cls": 32} if has_cls else {}), "aligned": 48, "last_token": 48,
               **extra},
        preprocessing=Preprocessing(size=size, mean=mean, std=std, resize_mode="shortest"),
        weights="random",
        description=f"tiny {description}, seeded random init",
        notes="random weights by design",
        default_kinds=("visual", "aligned", "last_token"),
        layers={**layers, "patch_mean": vision, "last_token": LayerSpan(2, 48)},
    )


for _name in _TINY_VLMS:
    _spec = _tiny_vlm_spec(_name)
    register_tiny(_spec, HFFamily, defaults=_TINY_VLMS[_name][6])(_load_tiny_vlm)

#: transformers dual encoders: name -> (spec name, description, mean, std, class token, aligned dim)
_TINY_HF_TOWERS: dict[str, tuple[str, str, tuple, tuple, bool, int]] = {
    "hf_clip": ("test:tiny-hf-clip", "transformers CLIPModel (ViT 16 px, patch 4, 2 layers, width 32, "
                "projection 24)", CLIP_MEAN, CLIP_STD, True, 24),
    "siglip2": ("test:tiny-siglip2", "transformers Siglip2Model, NaFlex (patch 4, 16 patches: a 16 px "
                "square; attention-pool head, no projection)", SIGLIP_MEAN, SIGLIP_MEAN, False, 32),
}


def _tiny_tower_spec(name: str) -> ExtractorSpec:
    spec_name, description, mean, std, has_cls, aligned = _TINY_HF_TOWERS[name]
    span = LayerSpan(2, 32)
    return ExtractorSpec(
        name=spec_name,
        family="test",
        kinds={"visual": 32, "aligned": aligned, "patch_mean": 32, **({"cls": 32} if has_cls else {})},
        preprocessing=Preprocessing(size=16, mean=mean, std=std, resize_mode="shortest"),
        weights="random",
        description=f"tiny {description}, seeded random init",
        notes="random weights by design" + ("" if has_cls else "; aligned is identical to visual"),
        default_kinds=("visual", "aligned"),
        layers={"cls": span, "patch_mean": span} if has_cls else {"patch_mean": span},
    )


for _name in _TINY_HF_TOWERS:
    register_tiny(_tiny_tower_spec(_name), HFFamily)(_load_tiny_vlm)

#: the VLMs written by ``tiny_vlms_more.build_tiny_<name>``: name -> (spec name, description,
#: input size, visual dim); each has a 2-block, 32-wide tower without class token, a 2-block
#: 48-wide LM and SigLIP's mean/std
_TINY_VLMS_MORE: dict[str, tuple[str, str, int, int]] = {
    "molmo2": ("test:tiny-molmo2", "Molmo2 (16 px crops, patch 4; a 32 px square: 2x2 overlapping "
               "crops + the global view; blocks 2 and 1 concatenated, 2x2 attention pooling; "
               "Molmo2 LM)", 32, 64),
    "phi4_multimodal": ("test:tiny-phi4-multimodal", "Phi-4-multimodal (32 px crops, patch 1; a 64 "
                        "px square: 2x2 sub-images + the global image; layer -2, 2x2 average pool, "
                        "separators, MLP; Phi LM; a minimal audio tower)", 64, 32),
}


def _tiny_vlm_more_spec(name: str) -> ExtractorSpec:
    spec_name, description, size, visual = _TINY_VLMS_MORE[name]
    return ExtractorSpec(
        name=spec_name,
        family="test",
        kinds={"visual": visual, "aligned": 48, "last_token": 48},
        preprocessing=Preprocessing(size=size, mean=SIGLIP_MEAN, std=SIGLIP_MEAN, resize_mode="shortest"),
        weights="random",
        description=f"tiny {description}, seeded random init",
        notes="random weights by design",
        default_kinds=("visual", "aligned", "last_token"),
        layers={"patch_mean": LayerSpan(2, 32), "last_token": LayerSpan(2, 48)},
    )


for _name in _TINY_VLMS_MORE:
    register_tiny(_tiny_vlm_more_spec(_name), HFFamily)(_load_tiny_vlm)


_TINY_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "test:tiny-llava": build_tiny_llava,
    "test:tiny-qwen2vl": build_tiny_qwen2vl,
    **{_tiny_vlm_spec(name).name: getattr(tiny_vlms, f"build_tiny_{name}") for name in _TINY_VLMS},
    **{_TINY_HF_TOWERS[name][0]: getattr(tiny_vlms, f"build_tiny_{name}") for name in _TINY_HF_TOWERS},
    **{_TINY_VLMS_MORE[name][0]: getattr(tiny_vlms_more, f"build_tiny_{name}") for name in _TINY_VLMS_MORE},
}
