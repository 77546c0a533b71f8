"""A tiny Qwen-VL in the layout of Qwen-VL-Chat's remote code (``QWenLMHeadModel.transformer``
a ``QWenModel`` with ``wte``, ``h``, ``ln_f`` and ``visual``; ``visual`` a ViT whose forward runs
``conv1``, ``ln_pre``, the ``transformer`` (LND), the ``attn_pool`` resampler, ``ln_post`` and
``@ proj``; the forward finds ``<img>...</img>`` in ``input_ids``, reads the image path from the
ids between them, runs ``visual.encode`` and writes the result between the tags; rotary positions
count 0..L-1 whatever ``position_ids`` says; ``QWenLMHeadModel`` casts itself by the config's
``bf16``/``fp16``/``fp32`` flags, at most one set, none: bf16 or fp16 on a GPU that has it, else
fp32, whatever dtype it is loaded in). Written for featkit's tests."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class QWenConfig(PretrainedConfig):
    model_type = "qwen"

    def __init__(self, vocab_size: int = 320, hidden_size: int = 32, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, visual: dict | None = None, bf16: bool = False,
                 fp16: bool = False, fp32: bool = False, **kwargs) -> None:
        self.vocab_size = vocab_size
        self.bf16, self.fp16, self.fp32 = bf16, fp16, fp32
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.visual = dict(visual or {})
        super().__init__(**kwargs)


class Resampler(nn.Module):
    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, kv_dim: int) -> None:
        super().__init__()
        self.num_queries = grid_size ** 2
        self.pos_embed = nn.Parameter(torch.randn(self.num_queries, embed_dim) * 0.02)
        self.query = nn.Parameter(torch.randn(self.num_queries, embed_dim) * 0.02)
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)
        q = self.ln_q(self.query)
        query = (q.unsqueeze(1) + self.pos_embed.unsqueeze(1)).expand(-1, x.shape[1], -1)
        out = self.attn(query, x + self.pos_embed[: x.shape[0]].unsqueeze(1), x)[0]
        return out.permute(1, 0, 2)


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 n_queries: int, output_dim: int, **kwargs) -> None:
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.randn((image_size // patch_size) ** 2, width) * 0.02)
        self.ln_pre = nn.LayerNorm(width, eps=1e-6)
        self.transformer = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0), layers,
            enable_nested_tensor=False)
        self.attn_pool = Resampler(int(math.sqrt(n_queries)), output_dim, max(1, output_dim // 16), width)
        self.ln_post = nn.LayerNorm(output_dim, eps=1e-6)
        self.proj = nn.Parameter(output_dim ** -0.5 * torch.randn(output_dim, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).permute(0, 2, 1)
        x = self.ln_pre(x + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(self.attn_pool(x)) @ self.proj

    def encode(self, image_paths: list[str]) -> torch.Tensor:
        from PIL import Image
        from torchvision import transforms

        transform = transforms.Compose([
            transforms.Resize((self.image_size, self.image_size),
                              interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
        images = torch.stack([transform(Image.open(path).convert("RGB")) for path in image_paths])
        return self(images.to(self.conv1.weight.device))


def rotary(length: int, dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=device).float() / dim)
    angles = torch.outer(torch.arange(length, device=device).float(), freqs)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class QWenAttention(nn.Module):
    def __init__(self, config: QWenConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, bias):
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in self.c_attn(x).chunk(3, -1))
        out = nn.functional.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v,
                                                         attn_mask=bias)
        return self.c_proj(out.transpose(1, 2).reshape(b, n, d))


class QWenBlock(nn.Module):
    def __init__(self, config: QWenConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size)
        self.attn = QWenAttention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, 2 * config.hidden_size), nn.SiLU(),
                                 nn.Linear(2 * config.hidden_size, config.hidden_size))

    def forward(self, x, cos, sin, bias):
        x = x + self.attn(self.ln_1(x), cos, sin, bias)
        return x + self.mlp(self.ln_2(x))


class QWenPreTrainedModel(PreTrainedModel):
    config_class = QWenConfig
    base_model_prefix = "transformer"


class QWenModel(QWenPreTrainedModel):
    def __init__(self, config: QWenConfig) -> None:
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(0.0)
        self.h = nn.ModuleList([QWenBlock(config) for _ in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(config.hidden_size)
        self.visual = VisionTransformer(**config.visual)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        start = self.config.visual["image_start_id"]
        images = None
        if past_key_values is None and torch.any(input_ids == start):
            bos_pos = torch.where(input_ids == start)
            eos_pos = torch.where(input_ids == start + 1)
            img_pos = torch.stack((bos_pos[0], bos_pos[1], eos_pos[1]), dim=1)
            paths = []
            for i, a, b in img_pos:
                image = input_ids[i][a + 1: b - 1].tolist()
                paths.append(bytes(image[: image.index(start + 2)]).decode("utf-8"))
            images = self.visual.encode(paths)
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        b, n = inputs_embeds.shape[:2]
        causal = torch.ones(n, n, dtype=torch.bool, device=inputs_embeds.device).tril()
        keep = causal[None, None] if attention_mask is None else causal[None, None] & attention_mask.bool()[:, None, None, :]
        bias = torch.zeros(keep.shape, dtype=inputs_embeds.dtype, device=keep.device).masked_fill(~keep, -1e9)
        cos, sin = rotary(n, self.config.hidden_size // self.config.num_attention_heads, inputs_embeds.device)
        hidden = self.drop(inputs_embeds).clone()
        if images is not None:
            for idx, (i, a, b_) in enumerate(img_pos):
                hidden[i][a + 1: b_] = images[idx]
        for block in self.h:
            hidden = block(hidden, cos, sin, bias)
        return BaseModelOutputWithPast(last_hidden_state=self.ln_f(hidden))


class QWenLMHeadModel(QWenPreTrainedModel):
    def __init__(self, config: QWenConfig) -> None:
        super().__init__(config)
        assert config.bf16 + config.fp16 + config.fp32 <= 1
        if config.bf16 + config.fp16 + config.fp32 == 0:
            cuda = torch.cuda.is_available()
            if cuda and torch.cuda.is_bf16_supported():
                config.bf16 = True
            elif cuda and torch.cuda.get_device_capability(0)[0] >= 7:
                config.fp16 = True
            else:
                config.fp32 = True
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.bf16:
            self.transformer.bfloat16()
            self.lm_head.bfloat16()
        if config.fp16:
            self.transformer.half()
            self.lm_head.half()
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte
