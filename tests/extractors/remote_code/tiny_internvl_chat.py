"""A tiny InternVL-Chat in the layout of OpenGVLab's remote code (``InternVLChatModel``:
``vision_model`` an InternViT returning ``last_hidden_state``/``hidden_states``,
``extract_feature`` with ``select_layer``, CLS drop, ``pixel_shuffle`` (``ps_version``) and
``mlp1``, a transformers ``LlamaForCausalLM`` as ``language_model``). Written for featkit's tests."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"

    def __init__(self, vision_config: dict | None = None, llm_config: dict | None = None,
                 select_layer: int = -1, downsample_ratio: float = 0.5, ps_version: str = "v2",
                 force_image_size: int | None = None, **kwargs) -> None:
        self.vision_config = PretrainedConfig(**(vision_config or {}))
        self.llm_config = dict(llm_config or {})
        self.select_layer = select_layer
        self.downsample_ratio = downsample_ratio
        self.ps_version = ps_version
        self.force_image_size = force_image_size
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        return out


class InternVisionEmbeddings(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(1, 1, config.hidden_size))
        self.patch_embedding = nn.Conv2d(3, config.hidden_size, config.patch_size, config.patch_size)
        patches = (config.image_size // config.patch_size) ** 2
        self.position_embedding = nn.Parameter(torch.randn(1, patches + 1, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(len(patches), -1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding


class InternVisionModel(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.embeddings = InternVisionEmbeddings(config)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(config.hidden_size, config.num_attention_heads,
                                       2 * config.hidden_size, dropout=0.0, batch_first=True)
            for _ in range(config.num_hidden_layers)])

    def forward(self, pixel_values=None, output_hidden_states=None, return_dict=None):
        hidden = self.embeddings(pixel_values)
        states = [hidden]
        for layer in self.layers:
            hidden = layer(hidden)
            states.append(hidden)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden, pooler_output=hidden[:, 0],
            hidden_states=tuple(states) if output_hidden_states else None)


class InternVLChatModel(PreTrainedModel):
    config_class = InternVLChatConfig
    main_input_name = "pixel_values"

    def __init__(self, config: InternVLChatConfig) -> None:
        super().__init__(config)
        vision = config.vision_config
        image_size = config.force_image_size or vision.image_size
        self.select_layer = config.select_layer
        self.downsample_ratio = config.downsample_ratio
        self.ps_version = config.ps_version
        self.num_image_token = int((image_size // vision.patch_size) ** 2 * config.downsample_ratio ** 2)
        self.vision_model = InternVisionModel(vision)
        self.language_model = LlamaForCausalLM(LlamaConfig(**config.llm_config))
        merged = vision.hidden_size * int(1 / config.downsample_ratio) ** 2
        hidden = config.llm_config["hidden_size"]
        self.mlp1 = nn.Sequential(nn.LayerNorm(merged), nn.Linear(merged, hidden), nn.GELU(),
                                  nn.Linear(hidden, hidden))
        self.img_context_token_id = None
        self.post_init()

    def pixel_shuffle(self, x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
        n, w, h, c = x.size()
        x = x.view(n, w, int(h * scale_factor), int(c / scale_factor)).permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor ** 2)))
        return x if self.ps_version == "v1" else x.permute(0, 2, 1, 3).contiguous()

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.select_layer == -1:
            vit_embeds = self.vision_model(pixel_values=pixel_values, output_hidden_states=False,
                                           return_dict=True).last_hidden_state
        else:
            vit_embeds = self.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                           return_dict=True).hidden_states[self.select_layer]
        vit_embeds = vit_embeds[:, 1:, :]
        side = int(vit_embeds.shape[1] ** 0.5)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], side, side, -1)
        vit_embeds = self.pixel_shuffle(vit_embeds, scale_factor=self.downsample_ratio)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], -1, vit_embeds.shape[-1])
        return self.mlp1(vit_embeds)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()
