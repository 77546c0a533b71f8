"""A tiny CogVLM2 in the layout of THUDM's remote code (``CogVLMForCausalLM.model`` a
``CogVLMModel`` with ``embed_tokens``, visual-expert ``layers``, ``norm`` and ``vision``, an
EVA2-CLIP whose forward drops CLS, runs a 2 x 2 ``conv`` (vision width to vision width), the GLU
``linear_proj`` (vision width to the LM's) and adds ``boi`` / ``eoi``; ``forward`` refuses
``inputs_embeds``, scatters the image at ``token_type_ids == VISION``, builds CogVLM's position
ids and calls ``llm_forward``).
Its config, like the hub's ``config.json``, names no ``model_type``. Written for featkit's tests."""

from __future__ import annotations

from argparse import Namespace

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1


class CogVLMConfig(PretrainedConfig):
    def __init__(self, vocab_size: int = 128, hidden_size: int = 32, intermediate_size: int = 64,
                 num_attention_heads: int = 4, num_hidden_layers: int = 2,
                 vision_config: dict | None = None, **kwargs) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.vision_config = dict(vision_config or {})
        super().__init__(**kwargs)


class PatchEmbedding(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.hidden_size, config.patch_size, config.patch_size)
        self.cls_embedding = nn.Parameter(torch.randn(1, config.hidden_size) * 0.02)
        self.position_embedding = nn.Embedding((config.image_size // config.patch_size) ** 2 + 1,
                                               config.hidden_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_embedding.expand(x.shape[0], -1, -1), x), dim=1)
        return x + self.position_embedding.weight.unsqueeze(0)


class Transformer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(config.hidden_size, config.num_heads, 2 * config.hidden_size,
                                       dropout=0.0, batch_first=True)
            for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class GLU(nn.Module):
    def __init__(self, config, in_features: int) -> None:
        super().__init__()
        self.linear_proj = nn.Linear(in_features, config.hidden_size, bias=False)
        self.norm1 = nn.LayerNorm(config.hidden_size)
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.norm1(self.linear_proj(x)))
        return self.dense_4h_to_h(nn.functional.silu(self.gate_proj(x)) * self.dense_h_to_4h(x))


class EVA2CLIPModel(nn.Module):
    def __init__(self, config: CogVLMConfig) -> None:
        super().__init__()
        vision_config = Namespace(**config.vision_config)
        self.patch_embedding = PatchEmbedding(vision_config)
        self.transformer = Transformer(vision_config)
        self.linear_proj = GLU(config, in_features=vision_config.hidden_size)
        self.conv = nn.Conv2d(vision_config.hidden_size, vision_config.hidden_size, kernel_size=2, stride=2)
        self.boi = nn.Parameter(torch.randn(1, 1, config.hidden_size) * 0.02)
        self.eoi = nn.Parameter(torch.randn(1, 1, config.hidden_size) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.patch_embedding(images))[:, 1:]
        b, s, h = x.shape
        side = int(s ** 0.5)
        x = self.conv(x.contiguous().view(b, side, side, h).permute(0, 3, 1, 2))
        x = self.linear_proj(x.flatten(2).transpose(1, 2))
        return torch.cat((self.boi.expand(b, -1, -1), x, self.eoi.expand(b, -1, -1)), dim=1)


def build_position_ids(x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    tmp = x.clone()
    if attention_mask is not None:
        tmp[~attention_mask.bool()] = -1
    is_boi_eoi = torch.zeros_like(x, dtype=torch.bool)
    is_boi_eoi[:, 1:] |= (tmp[:, 1:] == VISION_TOKEN_TYPE) & (tmp[:, :-1] == LANGUAGE_TOKEN_TYPE)
    is_boi_eoi[:, 0] |= tmp[:, 0] == VISION_TOKEN_TYPE
    is_boi_eoi[:, :-1] |= (tmp[:, :-1] == VISION_TOKEN_TYPE) & (tmp[:, 1:] == LANGUAGE_TOKEN_TYPE)
    is_boi_eoi[:, -1] |= tmp[:, -1] == VISION_TOKEN_TYPE
    tmp[is_boi_eoi] = LANGUAGE_TOKEN_TYPE
    y = torch.zeros_like(x, dtype=torch.long)
    y[:, 1:] = (tmp[:, 1:] == LANGUAGE_TOKEN_TYPE) | (
        (tmp[:, 1:] == VISION_TOKEN_TYPE) & (tmp[:, :-1] == LANGUAGE_TOKEN_TYPE))
    return y.cumsum(dim=-1)


def rotate(x, positions):
    dim = x.shape[-1]
    freqs = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=x.device).float() / dim)
    angles = positions[:, None, :, None].float() * freqs
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    return x * cos + torch.cat([-x[..., dim // 2:], x[..., :dim // 2]], dim=-1) * sin


def expert(vision_module, language_module, x, vision_mask, out_features):
    out = x.new_zeros(*x.shape[:-1], out_features)
    out[vision_mask] = vision_module(x[vision_mask])
    out[~vision_mask] = language_module(x[~vision_mask])
    return out


class CogVLMDecoderLayer(nn.Module):
    def __init__(self, config: CogVLMConfig) -> None:
        super().__init__()
        d, self.heads = config.hidden_size, config.num_attention_heads
        self.vision_expert_query_key_value = nn.Linear(d, 3 * d, bias=False)
        self.language_expert_query_key_value = nn.Linear(d, 3 * d, bias=False)
        self.vision_expert_dense = nn.Linear(d, d, bias=False)
        self.language_expert_dense = nn.Linear(d, d, bias=False)
        self.vision_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.language_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.input_layernorm = nn.RMSNorm(d, eps=1e-5)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=1e-5)

    def forward(self, x, token_type_ids, position_ids, bias):
        vision = torch.zeros_like(token_type_ids, dtype=torch.bool)
        vision[:, :-1] = (token_type_ids[:, :-1] == VISION_TOKEN_TYPE) & (token_type_ids[:, 1:] == VISION_TOKEN_TYPE)
        b, n, d = x.shape
        qkv = expert(self.vision_expert_query_key_value, self.language_expert_query_key_value,
                     self.input_layernorm(x), vision, 3 * d)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in qkv.chunk(3, -1))
        attn = nn.functional.scaled_dot_product_attention(rotate(q, position_ids), rotate(k, position_ids),
                                                          v, attn_mask=bias).transpose(1, 2).reshape(b, n, d)
        x = x + expert(self.vision_expert_dense, self.language_expert_dense, attn, vision, d)
        return x + expert(self.vision_mlp, self.language_mlp, self.post_attention_layernorm(x), vision, d)


class CogVLMPreTrainedModel(PreTrainedModel):
    config_class = CogVLMConfig
    base_model_prefix = "model"


class CogVLMModel(CogVLMPreTrainedModel):
    def __init__(self, config: CogVLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([CogVLMDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=1e-5)
        self.vision = EVA2CLIPModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None,
                position_ids=None, past_key_values=None, inputs_embeds=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        assert input_ids is not None and inputs_embeds is None
        if images:
            inputs_embeds = self.embed_tokens(input_ids)
            features = self.vision(torch.stack([image for row in images for image in row]))
            inputs_embeds = inputs_embeds.index_put([token_type_ids == VISION_TOKEN_TYPE],
                                                    features.reshape(-1, features.shape[-1]))
        else:
            if token_type_ids is None:
                token_type_ids = torch.full_like(input_ids, LANGUAGE_TOKEN_TYPE)
            assert not (token_type_ids == VISION_TOKEN_TYPE).any()
            inputs_embeds = self.embed_tokens(input_ids)
        if position_ids is None:
            position_ids = build_position_ids(token_type_ids, attention_mask)
        return self.llm_forward(input_ids=None, token_type_ids=token_type_ids,
                                attention_mask=attention_mask, position_ids=position_ids,
                                inputs_embeds=inputs_embeds)

    def llm_forward(self, input_ids=None, token_type_ids=None, attention_mask=None, position_ids=None,
                    past_key_values=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                    output_hidden_states=None, return_dict=None):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        b, n = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(n, device=inputs_embeds.device).expand(b, -1)
        causal = torch.ones(n, n, dtype=torch.bool, device=inputs_embeds.device).tril()
        keep = causal[None, None] if attention_mask is None else causal[None, None] & attention_mask.bool()[:, None, None, :]
        bias = torch.zeros(keep.shape, dtype=inputs_embeds.dtype, device=keep.device).masked_fill(~keep, -1e9)
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, token_type_ids, position_ids, bias)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden))


class CogVLMForCausalLM(CogVLMPreTrainedModel):
    def __init__(self, config: CogVLMConfig) -> None:
        super().__init__(config)
        self.model = CogVLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens
