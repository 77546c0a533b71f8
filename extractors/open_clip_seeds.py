"""The open_clip seed models' specs as data, so that describing and listing them imports nothing
heavy: what ``extractors.open_clip._describe`` computes for each of ``SEED_MODELS``, dims from
a meta-device tower, preprocessing from the tag.

Written by ``python tests/extractors/test_seed_specs.py --write``; that test file checks every
entry against ``_describe``, so change ``SEED_MODELS`` and rewrite, never edit by hand.
"""

from __future__ import annotations

from extractors.base import ExtractorSpec, Preprocessing
from extractors.layers import LayerSpan

#: canonical id order as in SEED_MODELS
SPECS: tuple[ExtractorSpec, ...] = (
    ExtractorSpec(
        name="open_clip:EVA02-L-14:merged2b_s4b_b131k",
        family="open_clip",
        kinds={"visual": 1024, "aligned": 768, "patch_mean": 1024},
        preprocessing=Preprocessing(
            size=224,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            resize_mode="shortest",
            interpolation="bicubic",
            crop_pct=1.0,
        ),
        weights="merged2b_s4b_b131k",
        description="open_clip EVA02-L-14 (merged2b_s4b_b131k), timm trunk eva02_large_patch14_clip_224, 224 px",
        notes="",
        default_kinds=(),
        config={
            "model_name": "EVA02-L-14",
            "tag": "merged2b_s4b_b131k",
            "quick_gelu": False,
            "layout": "timm-classifier",
            "preprocess": {
                "transform": "open_clip.image_transform",
                "size": 224,
                "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711],
                "interpolation": "bicubic",
                "resize_mode": "shortest",
                "fill_color": 0,
            },
            "config_quick_gelu": False,
        },
        layers={"cls": LayerSpan(depth=24, dim=1024), "patch_mean": LayerSpan(depth=24, dim=1024)},
    ),
    ExtractorSpec(
        name="open_clip:EVA02-L-14-336:merged2b_s6b_b61k",
        family="open_clip",
        kinds={"visual": 1024, "aligned": 768, "patch_mean": 1024},
        preprocessing=Preprocessing(
            size=336,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            resize_mode="shortest",
            interpolation="bicubic",
            crop_pct=1.0,
        ),
        weights="merged2b_s6b_b61k",
        description="open_clip EVA02-L-14-336 (merged2b_s6b_b61k), timm trunk eva02_large_patch14_clip_336, 336 px",
        notes="",
        default_kinds=(),
        config={
            "model_name": "EVA02-L-14-336",
            "tag": "merged2b_s6b_b61k",
            "quick_gelu": False,
            "layout": "timm-classifier",
            "preprocess": {
                "transform": "open_clip.image_transform",
                "size": 336,
                "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711],
                "interpolation": "bicubic",
                "resize_mode": "shortest",
                "fill_color": 0,
            },
            "config_quick_gelu": False,
        },
        layers={"cls": LayerSpan(depth=24, dim=1024), "patch_mean": LayerSpan(depth=24, dim=1024)},
    ),
    ExtractorSpec(
        name="open_clip:ViT-L-14-quickgelu:openai",
        family="open_clip",
        kinds={"visual": 1024, "aligned": 768, "patch_mean": 1024},
        preprocessing=Preprocessing(
            size=224,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            resize_mode="shortest",
            interpolation="bicubic",
            crop_pct=1.0,
        ),
        weights="openai",
        description="open_clip ViT-L-14-quickgelu (openai), 224 px",
        notes="",
        default_kinds=(),
        config={
            "model_name": "ViT-L-14-quickgelu",
            "tag": "openai",
            "quick_gelu": True,
            "layout": "native",
            "preprocess": {
                "transform": "open_clip.image_transform",
                "size": 224,
                "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711],
                "interpolation": "bicubic",
                "resize_mode": "shortest",
                "fill_color": 0,
            },
            "config_quick_gelu": True,
        },
        layers={"cls": LayerSpan(depth=24, dim=1024), "patch_mean": LayerSpan(depth=24, dim=1024)},
    ),
    ExtractorSpec(
        name="open_clip:coca_ViT-L-14:laion2b_s13b_b90k",
        family="open_clip",
        kinds={"visual": 768, "aligned": 768},
        preprocessing=Preprocessing(
            size=224,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            resize_mode="shortest",
            interpolation="bicubic",
            crop_pct=1.0,
        ),
        weights="laion2b_s13b_b90k",
        description="open_clip coca_ViT-L-14 (laion2b_s13b_b90k), 224 px",
        notes="no 'patch_mean': the tower has no final norm over its patch tokens (attentional pooler, or norm after pooling)",
        default_kinds=(),
        config={
            "model_name": "coca_ViT-L-14",
            "tag": "laion2b_s13b_b90k",
            "quick_gelu": False,
            "layout": "native",
            "preprocess": {
                "transform": "open_clip.image_transform",
                "size": 224,
                "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711],
                "interpolation": "bicubic",
                "resize_mode": "shortest",
                "fill_color": 0,
            },
            "config_quick_gelu": False,
        },
        layers={},
    ),
    ExtractorSpec(
        name="open_clip:ViT-H-14-quickgelu:dfn5b",
        family="open_clip",
        kinds={"visual": 1280, "aligned": 1024, "patch_mean": 1280},
        preprocessing=Preprocessing(
            size=224,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            resize_mode="squash",
            interpolation="bicubic",
            crop_pct=1.0,
        ),
        weights="dfn5b",
        description="open_clip ViT-H-14-quickgelu (dfn5b), 224 px",
        notes="",
        default_kinds=(),
        config={
            "model_name": "ViT-H-14-quickgelu",
            "tag": "dfn5b",
            "quick_gelu": True,
            "layout": "native",
            "preprocess": {
                "transform": "open_clip.image_transform",
                "size": 224,
                "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711],
                "interpolation": "bicubic",
                "resize_mode": "squash",
                "fill_color": 0,
            },
            "config_quick_gelu": True,
        },
        layers={"cls": LayerSpan(depth=32, dim=1280), "patch_mean": LayerSpan(depth=32, dim=1280)},
    ),
    ExtractorSpec(
        name="open_clip:ViT-SO400M-14-SigLIP:webli",
        family="open_clip",
        kinds={"visual": 1152, "aligned": 1152, "patch_mean": 1152},
        preprocessing=Preprocessing(
            size=224,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            resize_mode="squash",
            interpolation="bicubic",
            crop_pct=1.0,
        ),
        weights="webli",
        description="open_clip ViT-SO400M-14-SigLIP (webli), timm trunk vit_so400m_patch14_siglip_224, 224 px",
        notes="aligned is identical to visual: the tower has no separate projection",
        default_kinds=(),
        config={
            "model_name": "ViT-SO400M-14-SigLIP",
            "tag": "webli",
            "quick_gelu": False,
            "layout": "timm-no-projection",
            "preprocess": {
                "transform": "open_clip.image_transform",
                "size": 224,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "interpolation": "bicubic",
                "resize_mode": "squash",
                "fill_color": 0,
            },
            "config_quick_gelu": False,
        },
        layers={"patch_mean": LayerSpan(depth=27, dim=1152)},
    ),
)

#: (model name, tag) -> where open_clip's pretrained config says the weights live
PRETRAINED: dict[tuple[str, str], dict[str, str | None]] = {
    ("EVA02-L-14", "merged2b_s4b_b131k"): {
        "file": None,
        "hf_hub": "timm/eva02_large_patch14_clip_224.merged2b_s4b_b131k/",
        "url": "",
    },
    ("EVA02-L-14-336", "merged2b_s6b_b61k"): {
        "file": None,
        "hf_hub": "timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k/",
        "url": "",
    },
    ("ViT-L-14-quickgelu", "openai"): {
        "file": None,
        "hf_hub": "timm/vit_large_patch14_clip_224.openai/",
        "url": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    },
    ("coca_ViT-L-14", "laion2b_s13b_b90k"): {
        "file": None,
        "hf_hub": "laion/CoCa-ViT-L-14-laion2B-s13B-b90k/",
        "url": "",
    },
    ("ViT-H-14-quickgelu", "dfn5b"): {
        "file": None,
        "hf_hub": "apple/DFN5B-CLIP-ViT-H-14/",
        "url": "",
    },
    ("ViT-SO400M-14-SigLIP", "webli"): {
        "file": None,
        "hf_hub": "timm/ViT-SO400M-14-SigLIP/",
        "url": "",
    },
}
