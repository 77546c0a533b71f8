"""timm models, ``timm:NAME`` for any timm model name (``arch`` or ``arch.tag``).

Feature kinds:

- ``visual``: ``forward_head(forward_features(x), pre_logits=True)``, the pooled feature before
  the classifier;
- ``cls``: the class token of the final (normed) tokens, for models that have one;
- ``patch_mean``: the mean of the final patch tokens (prefix tokens excluded), for token models;
- ``cls@L`` / ``patch_mean@L`` (ViT, EVA and BEiT token models): the same pooling of block ``L``'s
  tokens after the model's final norm (DINOv2's ``get_intermediate_layers(norm=True)``), from one
  forward pass (hooks on the blocks), so ``cls@-1`` is ``cls`` (see :mod:`extractors.layers`).

Preprocessing is the pretrained tag's data config (``resolve_data_config`` +
``create_transform``). Weights load through timm's own ``pretrained=True`` path (with the
model's checkpoint filter), from ``--weights``, the local caches, or a download when reachable.
The option ``image_size`` runs a ViT at another resolution (position embeddings resampled by
timm), e.g. DINOv2 at 224 px instead of the tag's 518. The seed models' specs are declared in
:mod:`extractors.timm_seeds`, so describing or listing them imports neither timm nor torch; any
other name is described from a meta-device model when asked for.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from extractors import add_alias, register, timm_seeds
from extractors.base import Extractor, ExtractorSpec, Family, OptionSpec, Preprocessing
from extractors.layers import KindDims, LayerSpan, TokenTower, capture_blocks, layer_requests
from extractors.single_thread import SingleThreadTransform

__all__ = ["IMAGE_SIZE", "SEED_MODELS", "TimmExtractor", "TimmFamily", "create_model", "data_config",
           "image_size_option", "model_layers", "token_tower", "user_weights"]

FAMILY = "timm"

#: The seeds' timm models: alias -> timm name.
SEED_MODELS: dict[str, str] = {
    "dinov2-s": "vit_small_patch14_dinov2.lvd142m",
    "dinov2-b": "vit_base_patch14_dinov2.lvd142m",
    "dinov2-l": "vit_large_patch14_dinov2.lvd142m",
    "dinov2-g": "vit_giant_patch14_dinov2.lvd142m",
    "vit-b-in21k": "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "beit3-b": "beit3_base_patch16_224.in22k_ft_in1k",
    "beit3-l": "beit3_large_patch16_224.in22k_ft_in1k",
    "aimv2-l": "aimv2_large_patch14_224.apple_pt",
    "aimv2-h-448": "aimv2_huge_patch14_448.apple_pt",
}
for _alias, _name in SEED_MODELS.items():
    add_alias(_alias, f"{FAMILY}:{_name}")

CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def model_kinds(model: Any) -> dict[str, int]:
    """Feature kinds and dims of a timm model (works on a meta-device model)."""
    dims = {"visual": int(getattr(model, "head_hidden_size", None) or model.num_features)}
    if hasattr(model, "num_prefix_tokens"):  # a token model: forward_features gives (B, N, C)
        if getattr(model, "cls_token", None) is not None and model.num_prefix_tokens >= 1:
            dims["cls"] = int(model.num_features)
        dims["patch_mean"] = int(model.num_features)
    return dims


def token_tower(model: Any) -> TokenTower | None:
    """Where a timm ViT, EVA or BEiT keeps its per-layer tokens (None for other models, whose
    blocks are not a token sequence through one final norm)."""
    from timm.models.beit import Beit
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, (VisionTransformer, Eva, Beit)):
        return None
    return TokenTower(model.blocks, model.norm, int(model.num_prefix_tokens),
                      has_cls=model.cls_token is not None and model.num_prefix_tokens >= 1)


def model_layers(model: Any) -> dict[str, LayerSpan]:
    """The per-layer kinds of a timm model (works on a meta-device model)."""
    tower = token_tower(model)
    return tower.spans(model.num_features) if tower is not None else {}


def data_config(model: Any, image_size: int | None = None) -> dict[str, Any]:
    """timm's evaluation data config for ``model`` (its pretrained tag's), at ``image_size`` if given."""
    from timm.data import resolve_data_config

    cfg = dict(resolve_data_config(model=model))
    if image_size:
        cfg["input_size"] = (3, int(image_size), int(image_size))
    return cfg


def _preprocessing_dict(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "transform": "timm.data.create_transform",
        "input_size": [int(s) for s in cfg["input_size"]],
        "interpolation": cfg["interpolation"],
        "mean": [float(m) for m in cfg["mean"]],
        "std": [float(s) for s in cfg["std"]],
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": cfg.get("crop_mode", "center"),
    }


def _preprocessing_summary(cfg: Mapping[str, Any]) -> Preprocessing:
    return Preprocessing(
        size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        resize_mode="squash" if cfg.get("crop_mode") == "squash" else "shortest",
        interpolation=cfg["interpolation"],
        crop_pct=float(cfg["crop_pct"]),
    )


def create_model(name: str, weights_file: str | Path | None = None, **model_kwargs: Any):
    """``timm.create_model`` in eval mode; a weights file goes through timm's pretrained loader
    (so the model's checkpoint filter applies), no file means random init."""
    import timm

    if weights_file is None:
        model = timm.create_model(name, pretrained=False, **model_kwargs)
    else:
        overlay = {"file": str(weights_file), "source": "file"}
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **model_kwargs)
    return model.eval()


class TimmExtractor(Extractor):
    """A loaded timm model with its data config's evaluation transform."""

    def __init__(
        self,
        spec: ExtractorSpec,
        model: Any,
        *,
        data_cfg: Mapping[str, Any],
        weights_identity: str,
        device: str = "cpu",
        precision: str = "fp32",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        from timm.data import create_transform
        from torchvision.transforms import Compose

        from extractors.transforms import to_rgb

        self.spec = spec
        self.device = device
        self.precision = precision
        self.weights_identity = weights_identity
        self.preprocessing = _preprocessing_dict(data_cfg)
        # timm's eval transform expects RGB; greyscale images (digits) would not broadcast
        timm_steps = create_transform(**data_cfg, is_training=False).transforms
        self.transform = SingleThreadTransform(Compose([to_rgb, *timm_steps]))
        self._settings = dict(settings or {})
        self.model = model.to(device).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        actual = model_kinds(self.model)
        missing = [k for k in spec.kinds if k not in actual]
        if missing:
            raise ValueError(f"{spec.name}: the model cannot give {missing} (it gives {list(actual)})")
        self.tower = token_tower(self.model)
        self.kinds = KindDims({k: actual[k] for k in spec.kinds}, model_layers(self.model))

    def forward(self, images, kinds: Sequence[str]):
        import torch

        with torch.inference_mode():
            return self._forward_with_grad(images, kinds)

    def differentiable_features(self, kind: str):
        return self._feature_function(kind, self._forward_with_grad)

    def _forward_with_grad(self, images, kinds: Sequence[str]):
        requests = layer_requests(kinds, self.kinds.layers)
        blocks = self.tower.blocks if requests else ()
        with capture_blocks(blocks, [index for _, index in requests.values()]) as captured:
            tokens = self.model.forward_features(images.to(self.device, non_blocking=True))
        out = self.tower.pool(requests, captured) if requests else {}
        if "visual" in kinds:
            out["visual"] = self.model.forward_head(tokens, pre_logits=True)
        if "cls" in kinds:
            out["cls"] = tokens[:, 0]
        if "patch_mean" in kinds:
            out["patch_mean"] = tokens[:, self.model.num_prefix_tokens :].mean(dim=1)
        return out

# -- names, weights and the family ----------------------------------------------------------------


def hub_dir_from_environment() -> str:
    """``torch.hub.get_dir()``'s default, from the environment alone: ``$TORCH_HOME/hub``,
    ``$TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` and that to ``~/.cache/torch``."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def _torch_hub_dir() -> str:
    """torch's hub directory without importing torch: torch's own answer once it is loaded
    (``torch.hub.set_dir`` may have moved it), else the same rule from the environment."""
    if "torch" not in sys.modules:
        return hub_dir_from_environment()
    import torch.hub

    return torch.hub.get_dir()


def _tag_source(name: str, cfg: Mapping[str, Any]):
    """Where timm would fetch ``name``'s weights from (hub preferred, like timm)."""
    from extractors.pretrained import HubFile, UrlFile, WeightsSource

    candidates: list[HubFile | UrlFile] = []
    if cfg.get("hf_hub_id"):
        repo_id, _, revision = cfg["hf_hub_id"].partition("@")
        filename = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        names = [filename]
        if filename == "pytorch_model.bin":
            names.insert(0, "model.safetensors")
        elif filename == "open_clip_pytorch_model.bin":
            names.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        candidates.append(HubFile(repo_id, tuple(names), revision or None))
    url = cfg.get("url")
    if isinstance(url, (list, tuple)):
        url = url[0] if url else None
    if url:
        candidates.append(UrlFile(url, os.path.join(_torch_hub_dir(), "checkpoints")))
    how_to = (
        f"pass --weights PATH (the checkpoint file, or a folder holding model.safetensors or "
        f"pytorch_model.bin), or fill the cache online once with "
        f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    )
    return WeightsSource(f"{FAMILY}:{name}", tuple(candidates), how_to)


@functools.lru_cache(maxsize=256)
def _describe(name: str) -> ExtractorSpec:
    """The spec of a timm name: canonical ``arch.tag``, kinds from a meta-device model, data config."""
    import timm
    import torch
    from timm.models import get_pretrained_cfg, split_model_name_tag

    from featkit.errors import UnknownNameError, closest

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise UnknownNameError(
            f"unknown timm model '{name}'{closest(arch, timm.list_models())}; see timm.list_models()"
        )
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise UnknownNameError(
            f"unknown pretrained tag '{tag}' for timm model {arch} (tags: {', '.join(tags) or 'none'})"
        ) from None
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    full = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else arch
    with torch.device("meta"):
        model = timm.create_model(full, pretrained=False)
    data_cfg = data_config(model)
    kinds = model_kinds(model)
    notes = []
    if getattr(model, "global_pool", None) == "token" and "cls" in kinds:
        notes.append("visual is the class token (token pooling), the same as cls")
    has_weights = bool(cfg_dict.get("hf_hub_id") or cfg_dict.get("url") or cfg_dict.get("file"))
    if not has_weights:
        notes.append("no published weights: pass --weights")
    size = data_cfg["input_size"][-1]
    return ExtractorSpec(
        name=f"{FAMILY}:{full}",
        family=FAMILY,
        kinds=kinds,
        preprocessing=_preprocessing_summary(data_cfg),
        weights=(cfg.tag or "default") if has_weights else "local",
        description=f"timm {full}, {size} px (crop {data_cfg['crop_pct']:g}, {data_cfg['interpolation']})",
        notes="; ".join(notes),
        config={"model_name": full, "pretrained_cfg": cfg_dict, "has_weights": has_weights},
        layers=model_layers(model),
    )


def user_weights(path: str | Path) -> tuple[Path, str]:
    from extractors.pretrained import find_checkpoint
    from extractors.weights import weights_identity

    path = Path(path).expanduser()
    identity = weights_identity(path)  # raises the one-line error when the path is missing
    return (path if path.is_file() else find_checkpoint(path, CHECKPOINT_NAMES)), identity


IMAGE_SIZE = OptionSpec(
    "image_size", int, None, changes_features=True,
    help="square input size in pixels (a ViT's position embeddings are resampled by timm), e.g. "
         "224 for DINOv2 instead of the tag's 518; default: the tag's",
)


def image_size_option(options: Mapping[str, Any] | None) -> int | None:
    """The ``image_size`` option (already parsed as an int), checked to be positive."""
    from featkit.errors import FeatkitError

    size = (options or {}).get("image_size")
    if size is not None and size <= 0:
        raise FeatkitError(f"option image_size must be a positive integer, got {size!r}")
    return size


#: full timm name (``arch.tag``) -> declared seed spec
_SEEDS_BY_NAME: dict[str, ExtractorSpec] = {spec.config["model_name"]: spec for spec in timm_seeds.SPECS}


@register
class TimmFamily(Family):
    """``timm:NAME``: any timm model (``arch`` uses timm's default tag)."""

    name = FAMILY
    options = (IMAGE_SIZE,)

    def specs(self) -> list[ExtractorSpec]:
        return list(timm_seeds.SPECS)

    def resolve(self, name: str) -> ExtractorSpec:
        return _SEEDS_BY_NAME.get(name) or _describe(name)

    def weights_available(self, spec: ExtractorSpec) -> bool:
        if not spec.config.get("has_weights"):
            return False
        from extractors.pretrained import find_cached

        return find_cached(_tag_source(spec.config["model_name"], spec.config["pretrained_cfg"])) is not None

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32",
             options: Mapping[str, Any] | None = None):
        from featkit.errors import MissingWeightsError

        name = spec.config["model_name"]
        image_size = image_size_option(options)
        if weights:
            path, identity = user_weights(weights)
        elif spec.config["has_weights"]:
            from extractors.pretrained import resolve_weights

            path = resolve_weights(_tag_source(name, spec.config["pretrained_cfg"]))
            identity = f"tag:{spec.weights}"
        else:
            raise MissingWeightsError(f"{spec.name} has no published weights; pass --weights PATH (a checkpoint of {name})")
        kwargs = {"img_size": image_size} if image_size else {}
        model = create_model(name, path, **kwargs)
        settings = {"image_size": image_size} if image_size else {}
        return TimmExtractor(spec, model, data_cfg=data_config(model, image_size), weights_identity=identity,
                             device=device, precision=precision, settings=settings)
