"""Hugging Face transformers VLMs: LLaVA-style models and Qwen2-VL (family ``hf``).

Ids are ``hf:<hub id or local directory>``. Feature kinds (all ``(B, D)``):

``visual``
    The vision tower's own tokens, mean-pooled. LLaVA: hidden states at the config's
    ``vision_feature_layer`` (-2 for LLaVA-1.5) with its ``vision_feature_select_strategy``
    (``"default"`` drops CLS) -- exactly the tokens the projector receives. Qwen2-VL: the last
    vision block's patch tokens before the PatchMerger.
``cls``
    LLaVA towers with a CLS token (CLIP): the CLS token at the same layer.
``aligned``
    The multimodal projector's output for the same tokens (LM embedding space), mean-pooled:
    LLaVA's ``multi_modal_projector``, Qwen2-VL's PatchMerger -- what the model's own
    ``get_image_features`` returns and the LM receives (FG-BMK Table 4, "aligned").
``last_token``
    VLM2Vec: prompt ``"<image-token> <instruction>"`` (no chat template; default instruction
    ``"Represent the given image."``), the base model's final-layer hidden state (after the final
    norm) at the last non-padding token found from the attention mask, L2-normalised. The LM head
    is never called, so no full-vocabulary logits are computed.

Images: LLaVA's transform is its image processor applied to one image. Qwen2-VL's processor keeps
the aspect ratio and gives every image its own patch count, which cannot be stacked into a batch;
featkit therefore resizes the shortest edge to a fixed ``image_size`` (option, default 448, a
multiple of 28) and centre-crops a square first, so every image has the same grid (448 -> 32x32
patches -> 256 LM tokens) and the processor's own output is a fixed ``(patches, C*T*P*P)`` tensor.

Weights load offline only: ``--weights DIR`` (a ``save_pretrained`` directory), a local directory
as the id, or the Hugging Face cache for hub ids; nothing is downloaded and a checkpoint with
missing parameters is refused (never random init). ``--adapter DIR`` applies a peft adapter
(merged into the weights); a directory holding only an adapter loads its base model the same way.
Needs transformers >= 5 (4.x exposes the image features differently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extractors import add_alias, register
from extractors.base import AdaptableExtractor, ExtractorSpec, Family, OptionSpec
from extractors.hf_weights import base_model_reference, first_line, merge_adapter, resolve_weights
from featkit.errors import FeatkitError, MissingWeightsError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_INSTRUCTION = "Represent the given image."
DEFAULT_QWEN_IMAGE_SIZE = 448
MIN_TRANSFORMERS = (5, 0)
KINDS = ("visual", "cls", "aligned", "last_token")
#: config.architectures[0] -> internal architecture name
ARCHITECTURES = {
    "LlavaForConditionalGeneration": "llava",
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
}
#: The options every hf model (and its tiny twins) accepts.
OPTIONS = (
    OptionSpec("instruction", str, DEFAULT_INSTRUCTION, changes_features=True,
               help="the instruction of the last_token prompt '<image-token> <instruction>'"),
    OptionSpec("image_size", int, None, changes_features=True,
               help=f"Qwen2-VL: the fixed square input size in pixels (default "
                    f"{DEFAULT_QWEN_IMAGE_SIZE}); LLaVA's processor fixes its own"),
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _known(alias: str, hub_id: str, dims: dict[str, int], description: str) -> ExtractorSpec:
    add_alias(alias, f"hf:{hub_id}")
    return ExtractorSpec(
        name=f"hf:{hub_id}",
        family="hf",
        kinds=dims,
        weights=hub_id,
        description=description,
        notes="weights from the local Hugging Face cache or --weights DIR (never downloaded)",
        default_kinds=("visual", "aligned"),
    )


KNOWN_SPECS = [
    _known("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf",
           {"visual": 1024, "cls": 1024, "aligned": 4096, "last_token": 4096},
           "LLaVA-1.5 7B: CLIP ViT-L/14-336 (layer -2, CLS dropped) + 2-layer MLP projector + Vicuna-7B"),
    _known("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf",
           {"visual": 1024, "cls": 1024, "aligned": 5120, "last_token": 5120},
           "LLaVA-1.5 13B: CLIP ViT-L/14-336 (layer -2, CLS dropped) + 2-layer MLP projector + Vicuna-13B"),
    _known("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct",
           {"visual": 1280, "aligned": 1536, "last_token": 1536},
           "Qwen2-VL 2B Instruct: 675M ViT + 2x2 PatchMerger + Qwen2-1.5B (fixed square input)"),
    _known("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct",
           {"visual": 1280, "aligned": 3584, "last_token": 3584},
           "Qwen2-VL 7B Instruct: 675M ViT + 2x2 PatchMerger + Qwen2-7B (fixed square input)"),
]


@register
class HFFamily(Family):
    """``hf:<hub id or local dir>``: any LLaVA or Qwen2-VL checkpoint loadable by transformers."""

    name = "hf"
    options = OPTIONS
    accepts_adapter = True

    def specs(self) -> list[ExtractorSpec]:
        return list(KNOWN_SPECS)

    def resolve(self, name: str) -> ExtractorSpec:
        for spec in KNOWN_SPECS:
            if spec.name == f"hf:{name}":
                return spec
        if not name:
            raise UnknownNameError("empty hf model id; use hf:<hub id or local directory>")
        if Path(name).expanduser().is_dir():  # one id per directory, however it was spelled
            name = str(Path(name).expanduser().resolve())
        return ExtractorSpec(
            name=f"hf:{name}",
            family="hf",
            kinds=dict.fromkeys(KINDS),
            weights=name,
            description="Hugging Face VLM (LLaVA or Qwen2-VL); dims known after loading",
            default_kinds=("visual", "aligned"),
        )

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32",
             options: Mapping[str, Any] | None = None) -> HFVLMExtractor:
        source = spec.name.partition(":")[2]
        path, identity, adapter = resolve_weights(source, weights, adapter)
        return load_hf_vlm(spec, path, weights_identity=identity, adapter=adapter, device=device,
                           precision=precision, options=options,
                           base_model_reference=base_model_reference(source, weights))

    def weights_available(self, spec) -> bool:
        source = spec.name.partition(":")[2]
        try:
            resolve_weights(source, None, None, hash_weights=False)
        except FeatkitError:
            return False
        return True


def _check_transformers() -> None:
    import importlib.metadata as md

    version = md.version("transformers")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_TRANSFORMERS:
        raise FeatkitError(
            f"the hf family needs transformers>=5.0 (installed {version}, whose VLMs expose image "
            f"features differently); run: pip install -U 'transformers>=5'"
        )


# -- loading ------------------------------------------------------------------------------------


def load_hf_vlm(
    spec: ExtractorSpec,
    path: str | Path,
    *,
    weights_identity: str,
    adapter: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
    quiet: bool = False,
    base_model_reference: str | None = None,
) -> HFVLMExtractor:
    """Load a LLaVA / Qwen2-VL ``save_pretrained`` directory (and optional peft adapter);
    ``base_model_reference`` is what adapters trained on it name as their base (default: the id).

    GPU: weights in bf16/fp16 placed directly on ``device`` (``device_map``; transformers 5
    always loads shard by shard, which is what ``low_cpu_mem_usage`` used to ask for). CPU: fp32.
    """
    _check_transformers()
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    path = Path(path)
    options = dict(options or {})
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(f"cannot read the config of {spec.name} in {path}: {first_line(err)}") from None
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    if architecture not in ARCHITECTURES:
        raise UnknownNameError(
            f"{spec.name} is a {architecture}; the hf family supports "
            f"{', '.join(ARCHITECTURES)}"
        )
    if ARCHITECTURES[architecture] == "llava" and options.get("image_size") is not None:
        raise FeatkitError(f"option image_size={options['image_size']}: {spec.name} is a LLaVA, whose "
                           f"image processor fixes its input size (the option is for Qwen2-VL)")
    on_gpu = str(device).startswith("cuda")
    dtype = torch.float32
    if on_gpu and precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "output_loading_info": True}
    if on_gpu:
        kwargs["device_map"] = {"": device}
    progress_was_on = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        model_class = getattr(transformers, architecture)
        try:
            model, info = model_class.from_pretrained(path, **kwargs)
            processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
        except OSError as err:
            raise MissingWeightsError(f"cannot load {spec.name} from {path}: {first_line(err)}") from None
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise MissingWeightsError(
                f"{path}: {len(missing)} parameter(s) missing from the checkpoint (e.g. {missing[0]}); "
                f"featkit never runs randomly initialised weights -- check the download is complete"
            )
        adapter_identity = None
        if adapter:
            model, adapter_identity = merge_adapter(model, adapter)
    finally:
        if quiet and progress_was_on:
            hf_logging.enable_progress_bar()
    if not on_gpu:
        model = model.to(device)
    model.eval().requires_grad_(False)
    return HFVLMExtractor(
        spec,
        model,
        processor,
        architecture=ARCHITECTURES[architecture],
        weights_identity=weights_identity,
        adapter_identity=adapter_identity,
        device=device,
        precision=precision,
        instruction=options.get("instruction") or DEFAULT_INSTRUCTION,
        image_size=options.get("image_size"),
        base_model_reference=base_model_reference,
    )


# -- the adapter --------------------------------------------------------------------------------


class ImageTransform:
    """PIL image -> the image processor's pixel tensor for that one image (picklable).

    With ``fixed_size`` the image is first resized (shortest edge) and centre-cropped to a square,
    so processors with dynamic resolution (Qwen2-VL) emit the same number of patches per image.
    """

    def __init__(self, image_processor: Any, fixed_size: int | None = None, batch_dim: bool = True) -> None:
        self.image_processor = image_processor
        self.fixed_size = fixed_size
        self.batch_dim = batch_dim

    def __call__(self, image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.fixed_size:
            image = square_crop(image, self.fixed_size)
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return pixels[0] if self.batch_dim else pixels


def square_crop(image, size: int):
    """Resize the shortest edge to ``size`` (bicubic), then centre-crop ``size`` x ``size``."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token (works for left and right padding)."""
    import torch

    positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens only, so a left-padded row sees the positions 0..n-1."""
    positions = attention_mask.long().cumsum(dim=1) - 1
    return positions.clamp(min=0)


class HFVLMExtractor(AdaptableExtractor):
    """A loaded LLaVA / Qwen2-VL: ``visual``, ``cls`` (CLS towers), ``aligned``, ``last_token``.

    :meth:`last_token` embeds any processor output (images and/or text, any padding side) and
    :meth:`embed_texts` embeds texts with the same pooling, for zero-shot and adaptation. Its
    pixel input is the image processor's (patchified for Qwen2-VL), so image-space attacks are
    not offered (:meth:`differentiable_features` raises).
    """

    def __init__(
        self,
        spec: ExtractorSpec,
        model: Any,
        processor: Any,
        *,
        architecture: str,
        weights_identity: str,
        adapter_identity: str | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        instruction: str = DEFAULT_INSTRUCTION,
        image_size: int | None = None,
        base_model_reference: str | None = None,
    ) -> None:
        import inspect

        import torch

        self.spec = spec
        self.model = model
        self.base = model.model  # the multimodal model without the LM head
        self.processor = processor
        self.architecture = architecture
        self.weights_identity = weights_identity
        self.adapter_identity = adapter_identity
        self.base_model_reference = base_model_reference or spec.name
        self.device = str(device)
        self.precision = precision
        self.dtype = next(model.parameters()).dtype
        self.instruction = instruction
        self.image_token = processor.image_token
        self.prompt = f"{self.image_token} {instruction}"
        self._precomputed_images = "mm_encoder_outputs" in inspect.signature(self.base.forward).parameters
        config = model.config
        text_hidden = config.text_config.hidden_size
        image_processor = processor.image_processor
        if architecture == "llava":
            layer = config.vision_feature_layer
            self.feature_layer = layer
            self.select_strategy = config.vision_feature_select_strategy
            n_layers = 1 if isinstance(layer, int) else len(layer)
            width = config.vision_config.hidden_size * n_layers
            self.kinds = {"visual": width, "aligned": text_hidden, "last_token": text_hidden}
            if any(hasattr(m, "class_embedding") for m in self.base.vision_tower.modules()):
                self.kinds["cls"] = width
            self.transform = ImageTransform(image_processor)
            self._grid = None
        else:
            self.feature_layer = "last"
            self.select_strategy = "full"
            self.kinds = {"visual": config.vision_config.embed_dim, "aligned": text_hidden,
                          "last_token": text_hidden}
            size = int(image_size or DEFAULT_QWEN_IMAGE_SIZE)
            self.transform = ImageTransform(image_processor, fixed_size=size, batch_dim=False)
            self._grid = self._fixed_grid(size)
        self.image_size = image_size if architecture == "llava" else size
        self.square_crop_size = None if architecture == "llava" else size
        self.preprocessing = {
            **json.loads(image_processor.to_json_string()),
            "featkit_square_crop": self.square_crop_size,
        }
        prompt_inputs = self._prompt_inputs()
        self._prompt_ids = prompt_inputs["input_ids"][:1].to(self.device)
        self._prompt_types = (prompt_inputs["mm_token_type_ids"][:1].to(self.device)
                              if "mm_token_type_ids" in prompt_inputs else None)
        del torch

    # -- set-up helpers --

    def _dummy_image(self):
        from PIL import Image

        size = self.image_size or 2 * max(getattr(self.model.config.vision_config, "image_size", 224), 1)
        return Image.new("RGB", (size, size), (127, 127, 127))

    def _fixed_grid(self, size: int):
        import torch
        from PIL import Image

        image_processor = self.processor.image_processor
        factor = image_processor.patch_size * image_processor.merge_size
        if size % factor:
            raise FeatkitError(f"image_size {size} must be a multiple of {factor} for {self.spec.name}")
        out = image_processor(images=Image.new("RGB", (size, size)), return_tensors="pt")
        expected = [1, size // image_processor.patch_size, size // image_processor.patch_size]
        grid = out["image_grid_thw"]
        if grid[0].tolist() != expected:
            raise FeatkitError(
                f"image_size {size} is outside {self.spec.name}'s processor pixel limits (it resizes to "
                f"grid {grid[0].tolist()}); choose a size within size.shortest_edge..longest_edge pixels"
            )
        return torch.as_tensor(expected, device=self.device).view(1, 3)

    def _prompt_inputs(self):
        """The tokenised image prompt, the same for every image (fixed image size)."""
        image = self._dummy_image()
        if self._grid is not None:
            image = square_crop(image, self.image_size)
        return self.processor(text=[self.prompt], images=[image], return_tensors="pt")

    def pixel_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        image_processor = self.processor.image_processor
        return (tuple(float(m) for m in image_processor.image_mean),
                tuple(float(s) for s in image_processor.image_std))

    def key_settings(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "prompt": self.prompt,
            "adapter": self.adapter_identity,
            "vision_feature_layer": self.feature_layer,
            "vision_feature_select_strategy": self.select_strategy,
            "pooling": "mean tokens; last_token: last non-padding token, L2-normalised",
        }

    # -- features --

    def image_features(self, pixel_values: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
        """Pooled ``visual``/``cls``/``aligned`` of a stacked batch, and the model's own image
        output (reusable by the LM pass)."""
        import torch

        pixel_values = pixel_values.to(self.device, self.dtype)
        if self.architecture == "llava":
            output = self.base.get_image_features(pixel_values=pixel_values, return_dict=True)
            layers = [self.feature_layer] if isinstance(self.feature_layer, int) else self.feature_layer
            hidden = torch.cat([output.hidden_states[layer] for layer in layers], dim=-1)
            tokens = hidden[:, 1:] if self.select_strategy == "default" else hidden
            pooled = {"visual": tokens.mean(dim=1), "aligned": torch.stack(list(output.pooler_output)).mean(dim=1)}
            if "cls" in self.kinds:
                pooled["cls"] = hidden[:, 0]
        else:
            batch, patches, width = pixel_values.shape
            output = self.base.get_image_features(
                pixel_values=pixel_values.reshape(batch * patches, width),
                image_grid_thw=self._grid.expand(batch, 3),
                return_dict=True,
            )
            tokens = output.last_hidden_state.reshape(batch, patches, -1)
            pooled = {"visual": tokens.mean(dim=1), "aligned": torch.stack(list(output.pooler_output)).mean(dim=1)}
        return pooled, output

    def forward(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        self.check_kinds(kinds)
        with torch.inference_mode():
            pooled, image_output = self.image_features(images)
            out = {k: pooled[k] for k in kinds if k in pooled}
            if "last_token" in kinds:
                batch = images.shape[0]
                inputs = {
                    "input_ids": self._prompt_ids.expand(batch, -1),
                    "attention_mask": torch.ones_like(self._prompt_ids).expand(batch, -1),
                    "pixel_values": images,
                }
                if self._grid is not None:
                    inputs["pixel_values"] = images.reshape(-1, images.shape[-1])
                    inputs["image_grid_thw"] = self._grid.expand(batch, 3)
                    inputs["mm_token_type_ids"] = self._prompt_types.expand(batch, -1)
                out["last_token"] = self.last_token(inputs, image_output=image_output)
        return out

    def last_token(
        self, inputs: Mapping[str, Any], *, image_output: Any = None, grad: bool = False
    ) -> torch.Tensor:
        """L2-normalised final hidden state at each row's last real token of processor ``inputs``.

        Calls the base model (no LM head, no KV cache). Positions come from the attention mask, so
        left- and right-padded batches give the same vectors. ``image_output`` (from
        :meth:`image_features` on the same pixels) skips re-running the vision tower. ``grad=True``
        keeps the autograd graph (for training adapters on these embeddings).
        """
        import contextlib

        import torch

        kwargs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        mask = kwargs["attention_mask"]
        if "pixel_values" in kwargs:
            kwargs["pixel_values"] = kwargs["pixel_values"].to(self.dtype)
        if self.architecture == "llava" or "pixel_values" not in kwargs:
            kwargs["position_ids"] = positions_from_mask(mask)
        # with images, Qwen2-VL builds its M-RoPE positions from the mask and mm_token_type_ids
        if image_output is not None and self._precomputed_images and "pixel_values" in kwargs:
            del kwargs["pixel_values"]
            kwargs["mm_encoder_outputs"] = {"image": image_output}
        with contextlib.nullcontext() if grad else torch.inference_mode():
            hidden = self.base(**kwargs, use_cache=False, return_dict=True).last_hidden_state
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            last = hidden[rows, last_token_index(mask).to(hidden.device)].float()
        return torch.nn.functional.normalize(last, dim=-1)

    def embed_texts(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """``(len(texts), D)`` float32 last-token embeddings of ``"<instruction> <text>"`` (or the
        bare text), batched by length to limit padding."""
        import numpy as np
        from tqdm.auto import tqdm

        prompts = [f"{instruction} {text}" if instruction else str(text) for text in texts]
        out = np.zeros((len(prompts), self.kinds["last_token"]), np.float32)
        if not prompts:
            return out
        tokenizer = self.processor.tokenizer
        lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        with tqdm(total=len(prompts), desc="texts", unit="text", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                encoded = tokenizer([prompts[i] for i in chunk], padding=True, return_tensors="pt")
                vectors = self.last_token(
                    {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
                )
                out[chunk] = vectors.cpu().numpy()
                bar.update(len(chunk))
        return out
