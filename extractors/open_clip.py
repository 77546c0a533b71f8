"""open_clip models, ``open_clip:NAME:TAG`` for any pair ``open_clip.list_pretrained()`` knows.

Feature kinds:

- ``visual``: the visual tower's pooled feature before the image-text projection;
- ``aligned``: the projected image embedding (what ``encode_image(normalize=False)`` returns);
- ``patch_mean``: the mean of the final (normed) patch tokens, the DINOv2 "avgpool" input;
- ``cls`` (towers with an attentional pooler: CoCa): the transformer's raw class token before
  the pooler, as FG-BMK reads CoCa, next to ``visual`` (the attention-pooled feature);
- ``cls@L`` / ``patch_mean@L`` (towers with ``patch_mean``): block ``L``'s tokens through the
  tower's final norm (``ln_post``, or the timm trunk's ``norm``), then the class token or the patch
  mean, from the same forward pass (see :mod:`extractors.layers`): ``patch_mean@-1`` is
  ``patch_mean``, and ``cls@-1`` is ``visual`` for class-token towers (a timm trunk's ``cls@-1``
  is its ``cls``).

The tower is split at its projection, so one forward gives all three and ``aligned`` is the
projection applied to ``visual`` by construction. Tower layouts (see :func:`tower_layout`): native
``VisionTransformer`` (pooled token ``@ proj``), timm trunks whose classifier is the projection
(EVA02, PE), timm trunks followed by an open_clip head (ViTamin, ConvNeXt), and timm trunks without
projection (SigLIP: ``aligned`` *is* ``visual``). Towers whose projection is fused into the
pooling (ResNet attention pools) offer ``aligned`` only.

Only the visual tower is built. Preprocessing is the tag's own even when the weights come from a
local file (open_clip itself falls back to OpenAI defaults then). The seed models' specs are
declared in :mod:`extractors.open_clip_seeds`, so describing or listing them imports nothing
heavy; any other pair is described from a meta-device tower when asked for.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from extractors import add_alias, open_clip_seeds, register
from extractors.base import Extractor, ExtractorSpec, Family, Preprocessing
from extractors.layers import KindDims
from extractors.open_clip_towers import (
    ALIGNED_ONLY,
    NO_PROJECTION_NOTE,
    TIMM_NO_PROJ,
    VisualTower,
    tower_dims,
    tower_layout,
)
from extractors.single_thread import SingleThreadTransform

__all__ = [
    "NO_PROJECTION_NOTE",
    "OpenClipExtractor",
    "OpenClipFamily",
    "SEED_MODELS",
    "VisualTower",
    "build_visual",
    "load_visual_weights",
    "preprocess_cfg",
    "tower_layout",
    "user_weights",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FAMILY = "open_clip"

#: The seeds' open_clip models: alias -> (model name, pretrained tag).
SEED_MODELS: dict[str, tuple[str, str]] = {
    "eva02-clip-l": ("EVA02-L-14", "merged2b_s4b_b131k"),
    "eva02-clip-l-336": ("EVA02-L-14-336", "merged2b_s6b_b61k"),
    "clip-l": ("ViT-L-14-quickgelu", "openai"),
    "coca-l": ("coca_ViT-L-14", "laion2b_s13b_b90k"),
    "dfn-h": ("ViT-H-14-quickgelu", "dfn5b"),
    "siglip-so400m": ("ViT-SO400M-14-SigLIP", "webli"),
    "clip-l-336": ("ViT-L-14-336-quickgelu", "openai"),
    "dfn-h-378": ("ViT-H-14-378-quickgelu", "dfn5b"),
    "siglip2-so400m": ("ViT-SO400M-14-SigLIP2", "webli"),
}
for _alias, (_name, _tag) in SEED_MODELS.items():
    add_alias(_alias, f"{FAMILY}:{_name}:{_tag}")

#: Checkpoint names looked for in a ``--weights`` directory, best first (open_clip's own order).
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)

# -- configs, preprocessing and weights -----------------------------------------------------------


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")


def _square(size: Any) -> int | list[int]:
    if isinstance(size, (list, tuple)):
        return int(size[0]) if size[0] == size[1] else [int(s) for s in size]
    return int(size)


def preprocess_cfg(model_cfg: Mapping[str, Any], overlay: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """open_clip's preprocessing for a model config and a tag (or ``preprocess_cfg``) overlay.

    The same merge ``create_model`` does for a tag (defaults, then the tag's keys, size from the
    tower), as a JSON-ready dict for the cache key and provenance.
    """
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(asdict(PreprocessCfg()), dict(overlay or {}))
    cfg["size"] = _square(model_cfg["vision_cfg"].get("image_size", 224))
    return {
        "transform": "open_clip.image_transform",
        "size": cfg["size"],
        "mean": [float(m) for m in cfg["mean"]],
        "std": [float(s) for s in cfg["std"]],
        "interpolation": cfg["interpolation"],
        "resize_mode": cfg["resize_mode"],
        "fill_color": cfg["fill_color"],
    }


def _transform(pre: Mapping[str, Any]):
    import open_clip

    size = pre["size"]
    return open_clip.image_transform(
        tuple(size) if isinstance(size, list) else size,
        is_train=False,
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        resize_mode=pre.get("resize_mode"),
        interpolation=pre.get("interpolation"),
        fill_color=pre.get("fill_color", 0),
    )


def _preprocessing_summary(pre: Mapping[str, Any]) -> Preprocessing:
    size = pre["size"]
    return Preprocessing(
        size=size if isinstance(size, int) else max(size),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        resize_mode=pre["resize_mode"],
        interpolation=pre["interpolation"],
    )


def build_visual(model_cfg: Mapping[str, Any], *, quick_gelu: bool | None = None):
    """Build only the visual tower of an open_clip model config (random init, fp32, CPU)."""
    from open_clip.model import _build_vision_tower

    vision_cfg = dict(model_cfg["vision_cfg"])
    vision_cfg["timm_model_pretrained"] = False  # never fetch ImageNet weights behind the user's back
    if quick_gelu is None:
        quick_gelu = bool(model_cfg.get("quick_gelu", False))
    return _build_vision_tower(model_cfg["embed_dim"], vision_cfg, quick_gelu, None)


def _read_visual_state(path: Path) -> dict[str, Any]:
    """The visual tower's tensors from a full open_clip checkpoint or a tower-only state dict."""
    from featkit.errors import FeatkitError

    if path.suffix in (".npz", ".npy"):
        raise FeatkitError(
            f"{path}: big_vision .npz weights are not supported; pass the open_clip checkpoint "
            f"(open_clip_model.safetensors from the model's hub repo) to --weights"
        )
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            wanted = [k for k in keys if k.startswith("visual.")] or keys
            state = {k: handle.get_tensor(k) for k in wanted}
    else:
        state = _torch_state(path)
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    return state


def _torch_state(path: Path) -> dict[str, Any]:
    """A torch checkpoint's state dict; OpenAI's original TorchScript files load via ``jit.load``
    (``torch.load(weights_only=True)`` refuses them), as open_clip's ``load_openai_model`` does."""
    import torch
    from open_clip.factory import load_state_dict

    try:
        return load_state_dict(str(path))
    except RuntimeError as err:
        if "TorchScript" not in str(err):
            raise
    return torch.jit.load(str(path), map_location="cpu").state_dict()


def load_visual_weights(visual: Any, path: str | Path) -> None:
    """Load a checkpoint into a visual tower; every tower parameter must be present and match."""
    from featkit.errors import FeatkitError

    path = Path(path)
    state = _read_visual_state(path)
    try:
        result = visual.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = " ".join(str(err).split())[:300]
        raise FeatkitError(f"{path} does not fit this model's visual tower: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:5])
        unexpected = ", ".join(result.unexpected_keys[:5])
        raise FeatkitError(
            f"{path} does not fit this model's visual tower ({len(result.missing_keys)} missing keys: "
            f"{missing or '-'}; {len(result.unexpected_keys)} unexpected: {unexpected or '-'}); "
            f"check that --weights belongs to the model named"
        )


def _pretrained_locations(name: str, tag: str) -> Mapping[str, Any]:
    """The ``file``/``hf_hub``/``url`` of open_clip's pretrained config for ``name``/``tag``
    (declared for the seeds, so their weights are looked up without importing open_clip)."""
    declared = open_clip_seeds.PRETRAINED.get((name, tag))
    if declared is not None:
        return declared
    import open_clip

    return open_clip.get_pretrained_cfg(name, tag)


def tag_source(name: str, tag: str):
    """Where open_clip would download ``name``/``tag`` from (hub preferred, like open_clip)."""
    import os

    from extractors.pretrained import HubFile, LocalFile, UrlFile, WeightsSource

    cfg = _pretrained_locations(name, tag)
    candidates: list[HubFile | UrlFile | LocalFile] = []
    if cfg.get("file"):  # open_clip uses such a file as is
        candidates.append(LocalFile(Path(cfg["file"])))
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])  # 'org/repo/' or 'org/repo/file'
        filename = filename or "open_clip_pytorch_model.bin"
        names = []
        if filename == "open_clip_pytorch_model.bin":
            names.append("open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.append(filename[:-4] + ".safetensors")
        candidates.append(HubFile(repo_id, (*names, filename)))
    if cfg.get("url"):
        url = cfg["url"]
        filename = os.path.basename(url)
        sha256 = None  # open_clip's own convention for its two URL hosts
        if "openaipublic" in url:
            sha256 = url.split("/")[-2]
        elif "mlfoundations" in url:
            sha256 = os.path.splitext(filename)[0].split("-")[-1]
        candidates.append(UrlFile(url, "~/.cache/clip", sha256))
    how_to = (
        f"pass --weights PATH (the checkpoint file, or a folder holding {CHECKPOINT_NAMES[0]} or "
        f"{CHECKPOINT_NAMES[2]}), or fill the cache online once with "
        f"python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\""
    )
    return WeightsSource(f"{FAMILY}:{name}:{tag}", tuple(candidates), how_to)


def user_weights(path: str | Path, model_cfg: Mapping[str, Any]) -> tuple[Path, str, dict[str, Any] | None]:
    """(checkpoint file, identity, the folder's preprocess_cfg) for a ``--weights`` file or folder."""
    from extractors.pretrained import find_checkpoint
    from extractors.weights import weights_identity
    from featkit.errors import FeatkitError

    path = Path(path).expanduser()
    identity = weights_identity(path)  # also raises the one-line error when the path is missing
    if path.is_file():
        return path, identity, None
    folder_pre = None
    config_file = path / "open_clip_config.json"
    if config_file.is_file():
        folder = json.loads(config_file.read_text())
        folder_model = folder.get("model_cfg", folder)
        if folder_model.get("embed_dim") is not None and (
            _vision_key(folder_model) != _vision_key(model_cfg)
        ):
            raise FeatkitError(
                f"{config_file} describes a different visual tower than the model named; "
                f"use the model id that matches it"
            )
        folder_pre = folder.get("preprocess_cfg")
    return find_checkpoint(path, CHECKPOINT_NAMES), identity, folder_pre


def _vision_key(model_cfg: Mapping[str, Any]) -> tuple:
    from dataclasses import asdict

    from open_clip.model import CLIPVisionCfg

    vision = asdict(CLIPVisionCfg(**model_cfg.get("vision_cfg", {})))
    vision.pop("timm_model_pretrained", None)
    return (model_cfg.get("embed_dim"), json.dumps(vision, sort_keys=True, default=str))


# -- the extractor --------------------------------------------------------------------------------


class OpenClipExtractor(Extractor):
    """A loaded open_clip visual tower (eval mode, on ``device``) with the tag's transform."""

    def __init__(
        self,
        spec: ExtractorSpec,
        visual: Any,
        *,
        preprocessing: Mapping[str, Any],
        weights_identity: str,
        device: str = "cpu",
        precision: str = "fp32",
        transform=None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.precision = precision
        self.weights_identity = weights_identity
        self.preprocessing = dict(preprocessing)
        self.transform = SingleThreadTransform(transform or _transform(preprocessing))
        self._settings = dict(settings or {})
        visual = visual.to(device).eval()
        for param in visual.parameters():
            param.requires_grad_(False)
        self.tower = VisualTower(visual)
        unknown = [k for k in spec.kinds if k not in self.tower.kinds]
        if unknown:
            raise ValueError(f"{spec.name}: the tower cannot give {unknown} (it gives {self.tower.kinds})")
        self.kinds = {k: int(d) if d else 0 for k, d in spec.kinds.items()}
        if self.tower.layout != ALIGNED_ONLY:  # the loaded tower's own dims must match the spec's
            actual = tower_dims(self.tower, self.preprocessing["size"])
            if any(spec.kinds.get(k) not in (None, actual[k]) for k in self.kinds):
                raise ValueError(f"{spec.name}: tower dims {actual} differ from the spec's {dict(spec.kinds)}")
            self.kinds = {k: actual[k] for k in self.kinds}
        self.kinds = KindDims(self.kinds, self.tower.layer_spans())

    def forward(self, images, kinds: Sequence[str]):
        import torch

        with torch.inference_mode():
            return self._forward_with_grad(images, kinds)

    def differentiable_features(self, kind: str):
        return self._feature_function(kind, self._forward_with_grad)

    def _forward_with_grad(self, images, kinds: Sequence[str]):
        out = self.tower(images.to(self.device, non_blocking=True), kinds)
        return {k: v for k, v in out.items() if k in kinds}


# -- the family -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _describe(name: str, tag: str | None) -> ExtractorSpec:
    """The spec for ``name``/``tag``: kinds and dims from a meta-device tower, the tag's preprocessing."""
    import open_clip
    import torch

    from featkit.errors import UnknownNameError, closest

    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise UnknownNameError(
            f"unknown open_clip model '{name}'{closest(name, open_clip.list_models())}; "
            f"ids look like open_clip:NAME:TAG with a pair from open_clip.list_pretrained()"
        )
    notes = []
    quick_gelu = bool(model_cfg.get("quick_gelu", False))
    tag_cfg: dict[str, Any] = {}
    if tag is not None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        matching = [t for t in tags if _clean_tag(t) == _clean_tag(tag)]
        if not matching:
            raise UnknownNameError(
                f"unknown pretrained tag '{tag}' for open_clip model {name} "
                f"(tags: {', '.join(tags) or 'none; pass --weights to open_clip:' + name})"
            )
        tag = matching[0]
        tag_cfg = open_clip.get_pretrained_cfg(name, tag)
        if tag_cfg.get("quick_gelu") and not quick_gelu:
            quick_gelu = True
            notes.append(f"QuickGELU as the '{tag}' weights were trained (the {name} config lacks it)")
    pre = preprocess_cfg(model_cfg, tag_cfg)
    with torch.device("meta"):
        tower = VisualTower(build_visual(model_cfg, quick_gelu=quick_gelu))
    kinds = tower_dims(tower, pre["size"])
    if tower.layout == TIMM_NO_PROJ:
        notes.append(NO_PROJECTION_NOTE)
    elif tower.layout == ALIGNED_ONLY:
        notes.append("only 'aligned': this tower's pooling ends in the projection")
    elif "cls" in tower.kinds:
        notes.append("cls: the transformer's raw class token before the attentional pooler (FG-BMK's "
                     "CoCa feature); visual is the attention-pooled feature")
    elif "patch_mean" not in tower.kinds:
        notes.append("no 'patch_mean': the tower has no final norm over its patch tokens "
                     "(attentional pooler, or norm after pooling)")
    if tag is None:
        notes.append("no pretrained tag: pass --weights; preprocessing is open_clip's default")
    size = pre["size"] if isinstance(pre["size"], int) else "x".join(map(str, pre["size"]))
    trunk = model_cfg["vision_cfg"].get("timm_model_name")
    return ExtractorSpec(
        name=f"{FAMILY}:{name}" + (f":{tag}" if tag else ""),
        family=FAMILY,
        kinds=kinds,
        preprocessing=_preprocessing_summary(pre),
        weights=tag or "local",
        description=f"open_clip {name}" + (f" ({tag})" if tag else "")
        + (f", timm trunk {trunk}" if trunk else "") + f", {size} px",
        notes="; ".join(notes),
        config={"model_name": name, "tag": tag, "quick_gelu": quick_gelu, "layout": tower.layout,
                 "preprocess": pre, "config_quick_gelu": bool(model_cfg.get("quick_gelu", False))},
        layers=tower.layer_spans(),
    )


#: (model name, cleaned tag) -> declared seed spec, matched the way :func:`_describe` matches tags
_SEEDS_BY_PAIR: dict[tuple[str, str], ExtractorSpec] = {
    (spec.config["model_name"], _clean_tag(spec.config["tag"])): spec for spec in open_clip_seeds.SPECS
}


@register
class OpenClipFamily(Family):
    """``open_clip:NAME:TAG`` (a pair from ``open_clip.list_pretrained()``) or ``open_clip:NAME``
    with ``--weights``."""

    name = FAMILY

    def specs(self) -> list[ExtractorSpec]:
        return list(open_clip_seeds.SPECS)

    def resolve(self, name: str) -> ExtractorSpec:
        model_name, _, tag = name.partition(":")
        model_name = model_name.replace("/", "-")
        declared = _SEEDS_BY_PAIR.get((model_name, _clean_tag(tag))) if tag else None
        return declared or _describe(model_name, tag or None)

    def weights_available(self, spec: ExtractorSpec) -> bool:
        tag = spec.config.get("tag")
        if not tag:
            return False
        from extractors.pretrained import find_cached

        return find_cached(tag_source(spec.config["model_name"], tag)) is not None

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32",
             options: Mapping[str, Any] | None = None):
        import open_clip

        from featkit.errors import MissingWeightsError

        name, tag = spec.config["model_name"], spec.config["tag"]
        model_cfg = open_clip.get_model_config(name)
        pre = dict(spec.config["preprocess"])
        if weights:
            path, identity, folder_pre = user_weights(weights, model_cfg)
            if tag is None and folder_pre:
                pre = preprocess_cfg(model_cfg, folder_pre)
        elif tag:
            from extractors.pretrained import resolve_weights

            path, identity = resolve_weights(tag_source(name, tag)), f"tag:{tag}"
        else:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise MissingWeightsError(
                f"{spec.name} names no pretrained tag, so it needs --weights PATH (an open_clip "
                f"checkpoint of {name}); or use open_clip:{name}:TAG (tags: {tags})"
            )
        visual = build_visual(model_cfg, quick_gelu=spec.config["quick_gelu"])
        load_visual_weights(visual, path)
        settings = {}
        if spec.config["quick_gelu"] != spec.config["config_quick_gelu"]:
            settings["quick_gelu"] = spec.config["quick_gelu"]
        return OpenClipExtractor(
            spec, visual, preprocessing=pre, weights_identity=identity, device=device,
            precision=precision, settings=settings,
        )
