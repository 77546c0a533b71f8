"""open_clip models: ``visual`` (pooled tower feature before the image-text projection) and
``aligned`` (the projected image embedding, what ``encode_image`` returns).

Native ``VisionTransformer`` towers expose no pre-projection call, so the adapter detaches the
projection matrix and applies it itself: ``aligned == visual @ proj`` by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from extractors.base import Extractor, ExtractorSpec, Preprocessing
from extractors.tiny import register_tiny

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipExtractor(Extractor):
    """Wraps an open_clip model (eval mode, on ``device``) with its validation transform."""

    def __init__(
        self,
        spec: ExtractorSpec,
        model: Any,
        *,
        preprocess_cfg: dict[str, Any],
        weights_identity: str,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        import open_clip
        import torch

        self.spec = spec
        self.device = device
        self.precision = precision
        self.weights_identity = weights_identity
        self.preprocessing = dict(preprocess_cfg)
        self.transform = open_clip.image_transform(
            preprocess_cfg["size"],
            is_train=False,
            mean=tuple(preprocess_cfg["mean"]),
            std=tuple(preprocess_cfg["std"]),
            resize_mode=preprocess_cfg.get("resize_mode"),
            interpolation=preprocess_cfg.get("interpolation"),
        )
        self.model = model.to(device).eval()
        visual = self.model.visual
        self._proj = getattr(visual, "proj", None)
        if isinstance(self._proj, torch.nn.Parameter):
            visual.proj = None  # the tower now returns the pre-projection pooled feature
        else:
            raise NotImplementedError(f"{type(visual).__name__} towers are not supported yet")
        width = self._proj.shape[0]
        self.kinds = {"visual": width, "aligned": self._proj.shape[1]}

    def forward(self, images, kinds: Sequence[str]):
        import torch

        with torch.inference_mode():
            visual = self.model.visual(images.to(self.device))
            out = {"visual": visual}
            if "aligned" in kinds:
                out["aligned"] = visual @ self._proj
        return {k: v for k, v in out.items() if k in kinds}


TINY_CLIP = ExtractorSpec(
    name="test:tiny-clip",
    family="test",
    kinds={"visual": 32, "aligned": 16},
    preprocessing=Preprocessing(size=32, mean=OPENAI_MEAN, std=OPENAI_STD, resize_mode="shortest", interpolation="bicubic"),
    weights="random",
    description="tiny open_clip ViT (2 layers, width 32, 32 px), seeded random init, for tests and the demo",
    notes="random weights by design",
)


@register_tiny(TINY_CLIP)
def load_tiny_clip(spec: ExtractorSpec, *, weights=None, device="cpu", precision="fp32", options=None):
    """Build the tiny CLIP with a fixed seed so every process gets the same weights."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(
            embed_dim=16,
            vision_cfg={"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
            text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
        )
    identity = "random:seed0"
    if weights:
        from extractors.weights import load_state_dict

        state, identity = load_state_dict(weights)
        model.load_state_dict(state)
    return OpenClipExtractor(
        spec,
        model,
        preprocess_cfg=spec.preprocessing.to_dict(),
        weights_identity=identity,
        device=device,
        precision=precision,
    )
