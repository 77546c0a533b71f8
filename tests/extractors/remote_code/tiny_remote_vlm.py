"""A tiny remote-code VLM (this file is the checkpoint's own modelling code, copied next to its
weights by ``save_pretrained``): a patch-embedding vision encoder with a class token, a 2-layer
MLP projector and a Llama language model. Loaded only with ``trust_remote_code``."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, PretrainedConfig, PreTrainedModel


class TinyRemoteConfig(PretrainedConfig):
    model_type = "featkit_tiny_remote"

    def __init__(self, image_size: int = 16, patch_size: int = 4, vision_hidden: int = 32,
                 text_config: dict | None = None, redraw_projector: bool = False, **kwargs) -> None:
        self.image_size = image_size
        self.redraw_projector = redraw_projector
        self.patch_size = patch_size
        self.vision_hidden = vision_hidden
        self.text_config = dict(text_config or {})
        super().__init__(**kwargs)


class TinyVision(nn.Module):
    """Patches -> one transformer encoder layer; returns ``(B, 1 + patches, D)`` tokens."""

    def __init__(self, config: TinyRemoteConfig) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, config.vision_hidden, config.patch_size, config.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.vision_hidden))
        self.encoder = nn.TransformerEncoderLayer(config.vision_hidden, 4, 2 * config.vision_hidden,
                                                  dropout=0.0, batch_first=True)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(pixels).flatten(2).transpose(1, 2)
        return self.encoder(torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1))


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config: TinyRemoteConfig) -> None:
        super().__init__(config)
        text = LlamaConfig(**config.text_config)
        self.vision = TinyVision(config)
        self.projector = nn.Sequential(nn.Linear(config.vision_hidden, text.hidden_size), nn.GELU(),
                                       nn.Linear(text.hidden_size, text.hidden_size))
        self.language_model = LlamaModel(text)
        if config.redraw_projector:  # Qwen-VL's pattern: an unsaved buffer, an unguarded redraw
            self.projector.register_buffer("masked_bias", torch.tensor(-1e4), persistent=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if self.config.redraw_projector and module is self.projector:
            for parameter in module.parameters():
                parameter.data.normal_(std=0.5)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, TinyVision):
            nn.init.normal_(module.cls, std=0.02)
