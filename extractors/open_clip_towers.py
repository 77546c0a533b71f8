"""open_clip visual towers split at their projection: the layouts, one forward for every kind
(layer kinds by hooks on the blocks), and the dims of each kind (from parameters, or a
meta-device forward). Used by :mod:`extractors.open_clip`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from extractors.layers import LayerSpan, TokenTower, capture_blocks, layer_requests

NO_PROJECTION_NOTE = "aligned is identical to visual: the tower has no separate projection"

# -- tower layouts --------------------------------------------------------------------------------

NATIVE = "native"  # open_clip VisionTransformer: pooled token after ln_post, then @ proj
TIMM_CLASSIFIER = "timm-classifier"  # timm trunk whose classifier is the projection (EVA02, PE)
TIMM_HEAD = "timm-head"  # timm trunk, then open_clip's linear/MLP head (ViTamin, ConvNeXt)
TIMM_NO_PROJ = "timm-no-projection"  # timm trunk, no projection at all (SigLIP)
ALIGNED_ONLY = "aligned-only"  # projection fused into pooling (ModifiedResNet, attention-pool heads)


def tower_layout(visual: Any) -> str:
    """Which of the layouts above an open_clip visual tower has (works on meta-device towers)."""
    import torch

    if hasattr(visual, "trunk") and hasattr(visual, "head"):
        head_parts = dict(visual.head.named_children())
        if "pool" in head_parts:
            return ALIGNED_ONLY
        if "proj" in head_parts or "mlp" in head_parts:
            return TIMM_HEAD
        if isinstance(visual.trunk.get_classifier(), torch.nn.Identity):
            return TIMM_NO_PROJ
        return TIMM_CLASSIFIER
    if hasattr(visual, "transformer") and isinstance(getattr(visual, "proj", None), torch.nn.Parameter):
        return NATIVE
    return ALIGNED_ONLY


class VisualTower:
    """An open_clip visual tower split at its projection: one forward, every feature kind.

    Takes ownership of ``visual``: a native tower's ``proj`` is detached (kept here) and its
    ``output_tokens`` switched on, so the tower itself returns the pre-projection pooled feature.
    """

    def __init__(self, visual: Any) -> None:
        self.visual = visual
        self.layout = tower_layout(visual)
        self.projection = None
        if self.layout == NATIVE:
            self.projection = visual.proj
            visual.proj = None
            visual.output_tokens = True

    @functools.cached_property
    def token_tower(self) -> TokenTower | None:
        """Where the per-layer tokens are (towers with ``patch_mean``), else None."""
        if "patch_mean" not in self.kinds:
            return None
        if self.layout == NATIVE:
            transformer = self.visual.transformer
            return TokenTower(transformer.resblocks, self.visual.ln_post, 1, has_cls=True,
                              batch_first=transformer.batch_first)
        from extractors.timm import token_tower

        return token_tower(self.visual.trunk)

    def layer_spans(self) -> dict[str, LayerSpan]:
        """The per-layer kinds of this tower (works on meta-device towers)."""
        tower = self.token_tower
        if tower is None:
            return {}
        width = (self.visual.transformer.width if self.layout == NATIVE
                 else self.visual.trunk.num_features)
        return tower.spans(width)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Feature kinds this tower can give (``patch_mean`` only where patch tokens are normed)."""
        if self.layout == ALIGNED_ONLY:
            return ("aligned",)
        kinds = ("visual", "aligned")
        if self.layout == NATIVE:
            v = self.visual
            if v.attn_pool is None and not v.final_ln_after_pool and v.pool_type in ("tok", "avg"):
                kinds += ("patch_mean",)
            elif v.attn_pool is not None:
                kinds += ("cls",)  # CoCa: the transformer's class token before the pooler
        elif hasattr(self.visual.trunk, "num_prefix_tokens"):
            kinds += ("patch_mean",)
        return kinds

    def __call__(self, images, kinds: Sequence[str]) -> dict[str, Any]:
        """Every requested kind from one forward (layer kinds by hooks on the blocks)."""
        requests = layer_requests(kinds, self.layer_spans()) if any("@" in k for k in kinds) else {}
        if "cls" in kinds and self.layout == NATIVE:  # the raw class token, hooked (CoCa)
            with capture_blocks([self.visual.transformer], [0]) as raw:  # (N, L, D) either way
                out = self._named(images, kinds)
            return {**out, "cls": raw[0][:, 0]}
        if not requests:
            return self._named(images, kinds)
        tower = self.token_tower
        with capture_blocks(tower.blocks, [index for _, index in requests.values()]) as captured:
            out = self._named(images, kinds)
        out.update(tower.pool(requests, captured))
        return out

    def _named(self, images, kinds: Sequence[str]) -> dict[str, Any]:
        if self.layout == ALIGNED_ONLY:
            out = self.visual(images)
            return {"aligned": out[0] if isinstance(out, tuple) else out}
        if self.layout == NATIVE:
            pooled, tokens = self.visual(images)
            out = {"visual": pooled}
            if "aligned" in kinds:
                out["aligned"] = pooled @ self.projection
            if "patch_mean" in kinds:
                out["patch_mean"] = tokens.mean(dim=1)
            return out
        trunk = self.visual.trunk
        tokens = trunk.forward_features(images)
        pooled = trunk.forward_head(tokens, pre_logits=True)
        out = {"visual": pooled}
        if "aligned" in kinds:
            if self.layout == TIMM_HEAD:
                out["aligned"] = self.visual.head(pooled)
            elif self.layout == TIMM_CLASSIFIER:
                out["aligned"] = trunk.get_classifier()(pooled)
            else:
                out["aligned"] = pooled
        if "patch_mean" in kinds:
            if tokens.ndim != 3:
                raise ValueError(f"{type(trunk).__name__} returns {tokens.ndim}-D features, not tokens")
            out["patch_mean"] = tokens[:, trunk.num_prefix_tokens :].mean(dim=1)
        return out


def tower_dims(tower: VisualTower, size: Any) -> dict[str, int]:
    """Feature dims from the tower's parameters; towers of no known layout need a meta forward."""
    import torch

    visual = tower.visual
    if tower.layout == NATIVE:
        dims = {"visual": tower.projection.shape[0], "aligned": tower.projection.shape[1],
                "patch_mean": visual.transformer.width, "cls": visual.transformer.width}
    elif tower.layout == ALIGNED_ONLY:
        output_dim = getattr(visual, "output_dim", None)
        return {"aligned": int(output_dim)} if output_dim else _meta_dims(tower, size)
    else:
        trunk = visual.trunk
        pooled = getattr(trunk, "head_hidden_size", None) or trunk.num_features
        dims = {"visual": pooled, "patch_mean": trunk.num_features}
        if tower.layout == TIMM_HEAD:
            linears = [m for m in visual.head.modules() if isinstance(m, torch.nn.Linear)]
            dims["aligned"] = linears[-1].out_features
        elif tower.layout == TIMM_CLASSIFIER:
            dims["aligned"] = trunk.get_classifier().out_features
        else:
            dims["aligned"] = pooled
    return {k: int(dims[k]) for k in tower.kinds}


def _meta_dims(tower: VisualTower, size: Any) -> dict[str, int]:
    """Feature dims from a forward of a meta-device tower (shapes only, no compute)."""
    import torch

    height, width = (size, size) if isinstance(size, int) else size
    device = next(tower.visual.parameters()).device
    if device.type != "meta":
        raise ValueError("dims of this tower come from a meta-device forward only")
    out = tower(torch.zeros(1, 3, height, width, device=device), tower.kinds)
    return {k: int(v.shape[-1]) for k, v in out.items()}
