"""A tiny Phi-3.5-V in the layout of the phi3_v remote code that VLM2Vec vendors
(``Phi3VForCausalLM.model`` a ``Phi3VModel`` with ``embed_tokens``, ``vision_embed_tokens`` (a
``Phi3ImageEmbedding``: CLIP ``img_processor`` read at ``layer_idx``, ``hd_feature_transform``
with 2 x 2 merge, ``sub_GN`` / ``glb_GN`` and ``img_projection``), ``layers`` and ``norm``; its
forward takes ``input_ids`` (image positions negative) and splits the batch on ``image_sizes``).
The CLIP tower is tiny but keeps the real 336 px / 14 px crop geometry. Written for featkit's
tests."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

TINY_CLIP_336 = dict(hidden_size=16, image_size=336, patch_size=14, intermediate_size=32,
                     num_attention_heads=2, num_hidden_layers=3)


class Phi3VConfig(PretrainedConfig):
    model_type = "phi3_v"

    def __init__(self, vocab_size: int = 128, hidden_size: int = 32, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, img_processor: dict | None = None, **kwargs) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.img_processor = dict(img_processor or {"layer_idx": -2, "type_feature": "patch"})
        super().__init__(**kwargs)


class Phi3ImageEmbedding(nn.Module):
    def __init__(self, config: Phi3VConfig, wte=None) -> None:
        super().__init__()
        self.wte = wte
        self.img_processor = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP_336))
        self.image_dim_out = TINY_CLIP_336["hidden_size"]
        self.glb_GN = nn.Parameter(torch.randn(1, 1, 4 * self.image_dim_out) * 0.02)
        self.sub_GN = nn.Parameter(torch.randn(1, 1, 1, 4 * self.image_dim_out) * 0.02)
        self.img_projection = nn.Sequential(nn.Linear(4 * self.image_dim_out, config.hidden_size),
                                            nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size))
        self.layer_idx = config.img_processor["layer_idx"]
        self.type_feature = config.img_processor["type_feature"]

    def get_img_features(self, img_embeds: torch.Tensor) -> torch.Tensor:
        out = self.img_processor(img_embeds, output_hidden_states=True)
        return out.hidden_states[self.layer_idx][:, 1:]

    def forward(self, input_ids, pixel_values, image_sizes=None) -> torch.Tensor:
        positions = torch.nonzero(input_ids < 0, as_tuple=True)
        hidden = self.wte(input_ids.clamp_min(0))
        if len(positions[0]):
            images, crops = pixel_values.shape[:2]
            features = self.get_img_features(pixel_values.flatten(0, 1)).reshape(
                images, crops, -1, self.image_dim_out)
            hidden = hidden.index_put(positions, self.hd_feature_transform(features, image_sizes))
        return hidden

    def hd_feature_transform(self, image_features, image_sizes):
        glb = self.add_image_newline(self.reshape_hd_patches_2x2merge(image_features[:, 0], 1, 1))
        rows = []
        for i, size in enumerate(image_sizes):
            h, w = (int(v) // 336 for v in size)
            sub = self.reshape_hd_patches_2x2merge(image_features[i, 1:1 + h * w], h, w)
            rows.append(torch.cat([self.add_image_newline(sub).squeeze(0), self.glb_GN.squeeze(0), glb[i]]))
        return self.img_projection(torch.cat(rows))

    def reshape_hd_patches_2x2merge(self, image_features, h_crop, w_crop):
        n, length, c = image_features.shape
        side = int(length ** 0.5)
        images = n // (h_crop * w_crop)
        return (image_features.reshape(n, side // 2, 2, side // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
                .reshape(images, h_crop, w_crop, side // 2, side // 2, 4 * c).permute(0, 1, 3, 2, 4, 5)
                .reshape(images, h_crop * side // 2, w_crop * side // 2, 4 * c))

    def add_image_newline(self, image_features_hd):
        images, h, _, dim = image_features_hd.shape
        newline = self.sub_GN.expand(images, h, -1, -1)
        return torch.cat([image_features_hd, newline], dim=2).reshape(images, -1, dim)


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__()
        d, self.heads = config.hidden_size, config.num_attention_heads
        self.qkv_proj = nn.Linear(d, 3 * d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.input_layernorm = nn.RMSNorm(d, eps=1e-5)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=1e-5)

    def forward(self, x, position_ids, bias):
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.qkv_proj(self.input_layernorm(x)).chunk(3, -1))
        dim = q.shape[-1]
        freqs = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=x.device).float() / dim)
        angles = position_ids[:, None, :, None].float() * freqs
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        q, k = ((t * cos + torch.cat([-t[..., dim // 2:], t[..., :dim // 2]], -1) * sin) for t in (q, k))
        attn = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.post_attention_layernorm(x))


class Phi3VPreTrainedModel(PreTrainedModel):
    config_class = Phi3VConfig
    base_model_prefix = "model"


class Phi3VModel(Phi3VPreTrainedModel):
    _tied_weights_keys = {"vision_embed_tokens.wte.weight": "embed_tokens.weight"}

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.vision_embed_tokens = Phi3ImageEmbedding(config, wte=self.embed_tokens)
        self.layers = nn.ModuleList([Phi3DecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=1e-5)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, pixel_values=None, image_sizes=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        b, n = input_ids.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(n, device=input_ids.device).expand(b, -1)
        with_image = [i for i, size in enumerate(image_sizes) if size is not None]
        without = [i for i, size in enumerate(image_sizes) if size is None]
        parts = []
        if with_image:
            parts.append(self.vision_embed_tokens(input_ids[with_image], pixel_values=pixel_values,
                                                  image_sizes=image_sizes))
        if without:
            parts.append(self.embed_tokens(input_ids[without]))
        order = torch.argsort(torch.tensor(with_image + without))
        hidden = torch.cat(parts)[order]
        causal = torch.ones(n, n, dtype=torch.bool, device=hidden.device).tril()
        keep = causal[None, None] if attention_mask is None else causal[None, None] & attention_mask.bool()[:, None, None, :]
        bias = torch.zeros(keep.shape, dtype=hidden.dtype, device=keep.device).masked_fill(~keep, -1e9)
        for layer in self.layers:
            hidden = layer(hidden, position_ids, bias)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden))


class Phi3VForCausalLM(Phi3VPreTrainedModel):
    _tied_weights_keys = {"model.vision_embed_tokens.wte.weight": "model.embed_tokens.weight"}

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens
