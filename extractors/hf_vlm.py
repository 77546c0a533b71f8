"""The loaded Hugging Face VLM: every architecture of :mod:`extractors.hf_archs` through
transformers 5's common calls (``get_image_features``, the base model's forward with
``mm_encoder_outputs``), one vision-tower pass per batch for every kind.

Feature kinds (all ``(B, D)``; see :mod:`extractors.hf` for what each means per architecture):
``visual`` (the vision tokens the projector receives, mean-pooled), ``cls`` (towers with a class
token), ``aligned`` (the projected tokens the language model receives, mean-pooled),
``last_token`` (VLM2Vec), and the layer kinds ``cls@L`` / ``patch_mean@L`` (the vision tower's
``hidden_states[L]``) and ``last_token@L`` (the language model's ``hidden_states[L]``).

Molmo2 and Phi-4-multimodal reach their image tokens through an image route
(:mod:`extractors.hf_image_routes`; :mod:`extractors.hf_molmo2`, :mod:`extractors.hf_phi4mm`),
which answers the image side (tower layers, batch inputs, image output, pooling) in their
model's own terms; the prompt, padding and ``last_token`` pooling stay this module's.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from extractors.base import AdaptableExtractor, ExtractorSpec
from extractors.hf_archs import (
    FEATURE_LAYER,
    FLAT,
    LANGUAGE_MODEL,
    MOLMO2,
    PATCHES,
    PHI4_MULTIMODAL,
    Architecture,
    vision_shape,
)
from extractors.hf_image_routes import ImageRoute
from extractors.hf_molmo2 import Molmo2Images
from extractors.hf_phi4mm import Phi4MultimodalImages
from extractors.layers import KindDims, LayerSpan, layer_requests
from extractors.vlm2vec import PROMPT, Vlm2VecProtocol
from featkit.errors import FeatkitError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_INSTRUCTION = "Represent the given image."
#: ``Architecture.images`` -> its route (the default, get_image_features, is this module's)
IMAGE_ROUTES: dict[str, type[ImageRoute]] = {MOLMO2: Molmo2Images, PHI4_MULTIMODAL: Phi4MultimodalImages}


class ImageTransform:
    """PIL image -> the image processor's pixel tensor for that one image (picklable).

    With ``fixed_size`` the image is first resized (shortest edge) and centre-cropped to a square,
    so processors with dynamic resolution (Qwen2-VL, any-resolution tiles) give every image the
    same shape; with ``stretch`` it is resized to that square whole, aspect not kept (PIL's
    default filter, as VLM2Vec's ``image.resize``). ``batch_dim``: the processor's output has a leading batch dimension to drop;
    ``pixel_key``: the output holding the pixels.
    """

    def __init__(self, image_processor: Any, fixed_size: int | None = None, batch_dim: bool = True,
                 pixel_key: str = "pixel_values", stretch: int | None = None) -> None:
        self.image_processor = image_processor
        self.fixed_size = fixed_size
        self.stretch = stretch
        self.batch_dim = batch_dim
        self.pixel_key = pixel_key

    def __call__(self, image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.stretch:
            image = image.resize((self.stretch, self.stretch))
        elif self.fixed_size:
            image = square_crop(image, self.fixed_size)
        pixels = self.image_processor(images=image, return_tensors="pt")[self.pixel_key]
        return pixels[0] if self.batch_dim else pixels


def vlm2vec_prompt(image_token: str, instruction: str) -> str:
    """VLM2Vec's eval prompt for one image and an instruction."""
    return PROMPT.format(image_token=image_token, instruction=instruction)


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


def _repeat(value: torch.Tensor, batch: int) -> torch.Tensor:
    """A one-image tensor (leading dim 1) repeated for ``batch`` images."""
    return value.repeat(batch, *([1] * (value.dim() - 1)))


class HFVLMExtractor(AdaptableExtractor):
    """A loaded transformers VLM: ``visual``, ``cls`` (class-token towers), ``aligned``,
    ``last_token`` and the layer kinds, from one vision-tower pass per batch.

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
        architecture: Architecture,
        weights_identity: str,
        adapter_identity: str | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        instruction: str = DEFAULT_INSTRUCTION,
        image_size: int | None = None,
        base_model_reference: str | None = None,
        vlm2vec: Vlm2VecProtocol | None = None,
    ) -> None:
        """``vlm2vec``: embed as VLM2Vec's evaluation does (:mod:`extractors.vlm2vec`): its prompt,
        and every image stretched to its square (``stretch_to``, else ``image_size``)."""
        self.spec = spec
        self.model = model
        self.arch = architecture
        self.architecture = architecture.name
        self.base = operator.attrgetter(architecture.base)(model) if architecture.base else model
        self.processor = processor
        self.weights_identity = weights_identity
        self.adapter_identity = adapter_identity
        self.base_model_reference = base_model_reference or spec.name
        self.device = str(device)
        self.precision = precision
        self.dtype = next(model.parameters()).dtype
        self.instruction = instruction
        self.image_token = str(processor.image_token)
        self.vlm2vec = vlm2vec
        if vlm2vec is not None:
            self.prompt = vlm2vec_prompt(self.image_token, instruction)
        elif architecture.image_token_in_prompt:
            self.prompt = f"{self.image_token} {instruction}"
        else:
            self.prompt = instruction
        config = model.config
        self.tower = vision_shape(config.vision_config)
        if self.tower is None:
            raise UnknownNameError(f"{spec.name}: featkit does not know its vision tower type "
                                   f"{config.vision_config.model_type!r}")
        route = IMAGE_ROUTES.get(architecture.images)
        self.images: ImageRoute | None = route(self) if route else None
        if self.images is not None:
            self.feature_layer, self.select_strategy = self.images.feature_layer, self.images.select_strategy
        elif architecture.visual == FEATURE_LAYER:
            self.feature_layer = config.vision_feature_layer
            self.select_strategy = config.vision_feature_select_strategy
        else:
            self.feature_layer, self.select_strategy = "last", "full"
        text = config.get_text_config()
        n_layers = 1 if not isinstance(self.feature_layer, list) else len(self.feature_layer)
        dims = {"visual": self.tower.width * n_layers, "aligned": int(text.hidden_size),
                "last_token": int(text.hidden_size)}
        layers = {"patch_mean": LayerSpan(self.tower.depth, self.tower.width),
                  "last_token": LayerSpan(int(text.num_hidden_layers), int(text.hidden_size))}
        if self.tower.has_cls and architecture.pixels != FLAT:
            dims = {"visual": dims["visual"], "cls": dims["visual"], **dims}
            layers = {"cls": LayerSpan(self.tower.depth, self.tower.width), **layers}
        if architecture.qformer:
            dims["qformer"] = int(config.qformer_config.hidden_size)
        self.kinds = KindDims(dims, layers)
        self.language_model = (operator.attrgetter(architecture.language)(self.base)
                               if architecture.lm_route == LANGUAGE_MODEL else None)
        image_processor = processor.image_processor
        size = image_size or architecture.default_size(image_processor, config.vision_config)
        self.stretch = None
        if vlm2vec is not None:
            self.stretch = size = vlm2vec.stretch_to or size
        self.image_size = size
        self.square_crop_size = size if architecture.fixed_size and not self.stretch else None
        self.transform = ImageTransform(image_processor, fixed_size=self.square_crop_size,
                                        batch_dim=not (architecture.pixels in (FLAT, PATCHES)
                                                       or architecture.flat_tiles),
                                        pixel_key=architecture.pixel_key, stretch=self.stretch)
        self.preprocessing = {
            **json.loads(image_processor.to_json_string()),
            "featkit_square_crop": self.square_crop_size,
            **({"featkit_stretch": self.stretch} if self.stretch else {}),
        }
        prompt_inputs = self._prompt_inputs()
        self._image_inputs = {k: prompt_inputs[k].to(self.device) for k in architecture.image_inputs}
        self._prompt_ids = prompt_inputs["input_ids"][:1].to(self.device)
        self._text_inputs = {k: prompt_inputs[k][:1].to(self.device) for k in architecture.text_inputs}
        if self.images is not None:
            self.images.setup(prompt_inputs)
        if architecture.pixels == FLAT and not (vlm2vec and vlm2vec.stretch_to):
            self._check_fixed_grid(size)  # (VLM2Vec's 1344 px stretch is resized by the processor)

    # -- set-up helpers --

    def _dummy_image(self):
        from PIL import Image

        size = self.image_size or 2 * max(int(self.model.config.vision_config.image_size), 1)
        image = Image.new("RGB", (size, size), (127, 127, 127))
        if self.stretch:
            return image.resize((self.stretch, self.stretch))
        return square_crop(image, self.square_crop_size) if self.square_crop_size else image

    def _check_fixed_grid(self, size: int) -> None:
        image_processor = self.processor.image_processor
        factor = image_processor.patch_size * image_processor.merge_size
        if size % factor:
            raise FeatkitError(f"image_size {size} must be a multiple of {factor} for {self.spec.name}")
        expected = [1, size // image_processor.patch_size, size // image_processor.patch_size]
        grid = self._image_inputs["image_grid_thw"]
        if grid[0].tolist() != expected:
            raise FeatkitError(
                f"image_size {size} is outside {self.spec.name}'s processor pixel limits (it resizes to "
                f"grid {grid[0].tolist()}); choose a size within size.shortest_edge..longest_edge pixels"
            )

    def _prompt_inputs(self):
        """The tokenised image prompt and the image's side inputs, the same for every image."""
        return self.processor(text=[self.prompt], images=[self._dummy_image()], return_tensors="pt")

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
            **({"vlm2vec": self.vlm2vec.settings()} if self.vlm2vec is not None else {}),
        }

    # -- features --

    def _hidden_index(self, layer: int) -> int:
        """``hidden_states`` index (0 = embeddings) of a vision-tower layer number."""
        return layer if layer >= 0 else self.tower.depth + 1 + layer

    def image_output(self, pixel_values: torch.Tensor, hidden: Sequence[int] = ()) -> Any:
        """``get_image_features`` of a stacked batch, with the tower's ``hidden_states`` at the
        indices ``hidden`` (and the feature layer) kept."""
        if self.images is not None:
            return self.images.image_output(pixel_values.to(self.device, self.dtype), hidden)
        batch = pixel_values.shape[0]
        pixel_values = pixel_values.to(self.device, self.dtype)
        if self.arch.pixels == FLAT:
            pixel_values = pixel_values.reshape(-1, pixel_values.shape[-1])
        elif self.arch.flat_tiles:
            pixel_values = pixel_values.reshape(-1, *pixel_values.shape[2:])
        kwargs = self._batch_image_inputs(batch)
        wanted = set(hidden)
        if self.arch.visual == FEATURE_LAYER:
            layers = self.feature_layer if isinstance(self.feature_layer, list) else [self.feature_layer]
            wanted |= {self._hidden_index(layer) for layer in layers}
        if wanted:
            kwargs["output_hidden_states"] = sorted(wanted)
        return self.base.get_image_features(pixel_values=pixel_values, **kwargs, return_dict=True)

    def _tokens(self, states: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-image token groups ``(B, groups, tokens, D)`` of a tower output (tiles, or one
        group; Qwen's flat patches are one group of ``P`` tokens)."""
        if self.arch.pixels == FLAT:
            return states.reshape(batch, 1, -1, states.shape[-1])
        return states.reshape(batch, -1, *states.shape[-2:])

    def pooled_image(self, output: Any, batch: int, kinds: Sequence[str],
                     requests: Mapping[str, tuple[str, int]] = {}) -> dict[str, torch.Tensor]:
        """``visual``/``cls``/``aligned`` and the vision layer kinds of one ``image_output``."""
        import torch

        if self.images is not None:
            return {k: v for k, v in self.images.pooled(output, batch, requests).items() if k in kinds}
        out: dict[str, torch.Tensor] = {}
        if self.arch.visual == FEATURE_LAYER:
            layers = self.feature_layer if isinstance(self.feature_layer, list) else [self.feature_layer]
            if self.arch.last_layer_is_output and layers == [-1]:
                states = output.last_hidden_state
            else:
                states = torch.cat([output.hidden_states[layer] for layer in layers], dim=-1)
            hidden = self._tokens(states, batch)
            tokens = hidden[:, :, 1:] if self.select_strategy == "default" else hidden
        else:
            hidden = tokens = self._tokens(output.last_hidden_state, batch)
        if "cls" in self.kinds:
            out["cls"] = hidden[:, self.arch.global_tile, 0]
        if self.arch.qformer:
            out["qformer"] = output.qformer_outputs.last_hidden_state.mean(dim=1)
        out["visual"] = tokens.reshape(batch, -1, tokens.shape[-1]).mean(dim=1)
        out["aligned"] = torch.stack([p.reshape(-1, p.shape[-1]).mean(dim=0)
                                      for p in self._per_image(output.pooler_output, batch)])
        for kind, (base, index) in requests.items():
            states = self._tokens(output.hidden_states[index + 1], batch)
            if base == "cls":
                out[kind] = states[:, self.arch.global_tile, 0]
            else:
                patches = states[:, :, 1:] if self.tower.has_cls else states
                out[kind] = patches.reshape(batch, -1, patches.shape[-1]).mean(dim=1)
        return {k: v for k, v in out.items() if k in kinds}

    @staticmethod
    def _per_image(projected: Any, batch: int) -> Sequence[torch.Tensor]:
        """The projected tokens of each image: ``pooler_output`` is a list per image, a
        ``(B, T, D)`` tensor, or all images' tokens concatenated (``(B * T, D)``)."""
        if isinstance(projected, (list, tuple)):
            return projected
        return projected.reshape(batch, -1, projected.shape[-1])

    def image_features(self, pixel_values: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
        """Pooled ``visual``/``cls``/``aligned`` of a stacked batch, and the model's own image
        output (reusable by the LM pass)."""
        output = self.image_output(pixel_values)
        return self.pooled_image(output, pixel_values.shape[0], list(self.kinds)), output

    def forward(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        self.check_kinds(kinds)
        requests = layer_requests(kinds, self.kinds.layers)
        vision = {k: r for k, r in requests.items() if r[0] != "last_token"}
        text = {k: r[1] for k, r in requests.items() if r[0] == "last_token"}
        batch = images.shape[0]
        with torch.inference_mode():
            output = self.image_output(images, [index + 1 for _, index in vision.values()])
            out = self.pooled_image(output, batch, kinds, vision)
            if "last_token" in kinds or text:
                inputs = {
                    "input_ids": self._prompt_ids.expand(batch, -1),
                    "attention_mask": torch.ones_like(self._prompt_ids).expand(batch, -1),
                    **{k: v.expand(batch, -1) for k, v in self._text_inputs.items()},
                    **self._batch_image_inputs(batch),
                }
                layers = self.last_token_layers(inputs, image_output=output, blocks=text.values())
                out.update({k: layers[index] for k, index in text.items()})
                if "last_token" in kinds:
                    out["last_token"] = layers[None]
        return {k: out[k] for k in kinds}

    def _batch_image_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        """The image side inputs of ``batch`` stacked images (the fixed image's, repeated, unless
        the image route builds them)."""
        if self.images is not None:
            return self.images.batch_inputs(batch)
        return {k: _repeat(v, batch) for k, v in self._image_inputs.items()}

    def last_token(
        self, inputs: Mapping[str, Any], *, image_output: Any = None, grad: bool = False
    ) -> torch.Tensor:
        """L2-normalised final hidden state at each row's last real token of processor ``inputs``.

        Calls the base model (no LM head, no KV cache). Positions come from the attention mask
        (the model's own multimodal RoPE positions for Qwen-VL images), so left- and right-padded
        batches give the same vectors. ``image_output`` (from :meth:`image_output` on the same
        pixels) skips re-running the vision tower. ``grad=True`` keeps the autograd graph (for
        training adapters on these embeddings).
        """
        return self.last_token_layers(inputs, image_output=image_output, grad=grad)[None]

    def last_token_layers(self, inputs: Mapping[str, Any], *, image_output: Any = None,
                          grad: bool = False, blocks: Sequence[int] = ()) -> dict[int | None, torch.Tensor]:
        """``{None: last_token}`` and ``{block: last_token@block}`` for the 0-based LM blocks in
        ``blocks``: the L2-normalised hidden state of each at the last real token, one forward."""
        import contextlib

        import torch

        kwargs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        mask = kwargs["attention_mask"]
        pixel_key = self.arch.pixel_key
        has_image = pixel_key in kwargs or image_output is not None
        if pixel_key in kwargs:
            kwargs[pixel_key] = kwargs[pixel_key].to(self.dtype)
        if not (self.arch.mrope and has_image):
            kwargs["position_ids"] = positions_from_mask(mask)
        if "token_type_ids" in self.arch.text_inputs and "token_type_ids" not in kwargs:
            # the processor marks a prompt as prefix (0); texts get the same (PaliGemma)
            kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
        blocks = sorted(set(blocks))
        with contextlib.nullcontext() if grad else torch.inference_mode():
            if image_output is None and pixel_key in kwargs and blocks:
                # the LM's hidden-state selection must not reach the vision tower's
                image_output = (self.images.inputs_output(kwargs) if self.images is not None else
                                self.base.get_image_features(
                                    pixel_values=kwargs["pixel_values"],
                                    **{k: kwargs[k] for k in self.arch.image_inputs if k in kwargs},
                                    return_dict=True))
            if self.images is not None:
                kwargs = self.images.language_inputs(kwargs, image_output)
            elif image_output is not None:
                kwargs.pop("pixel_values", None)
                kwargs["mm_encoder_outputs"] = {"image": image_output}
            if blocks:
                kwargs["output_hidden_states"] = [index + 1 for index in blocks]
            if self.language_model is not None:
                kwargs = self._language_inputs(kwargs)
                result = self.language_model(**kwargs, use_cache=False, return_dict=True)
            else:
                result = self.base(**kwargs, use_cache=False, return_dict=True)
            rows = torch.arange(mask.shape[0], device=result.last_hidden_state.device)
            last = last_token_index(mask).to(result.last_hidden_state.device)
            states: dict[int | None, torch.Tensor] = {None: result.last_hidden_state}
            states.update({index: result.hidden_states[index + 1] for index in blocks})
            return {key: torch.nn.functional.normalize(value[rows, last].float(), dim=-1)
                    for key, value in states.items()}

    def _language_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The language model's own inputs (:data:`~extractors.hf_archs.LANGUAGE_MODEL` route):
        token embeddings with the projected image tokens put at the image-token positions, as
        the model's forward does before it calls the LM (and its head)."""
        input_ids = kwargs.pop("input_ids")
        embeds = self.base.get_input_embeddings()(input_ids)
        image_output = kwargs.pop("mm_encoder_outputs", {}).get("image")
        pixel_values = kwargs.pop("pixel_values", None)
        if image_output is None and pixel_values is not None:
            image_output = self.image_output(pixel_values)
        if image_output is not None:
            features = image_output.pooler_output.to(embeds.dtype).reshape(-1, embeds.shape[-1])
            where = (input_ids == self.model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(where.to(embeds.device), features)
        kwargs.pop("token_type_ids", None)
        return {**kwargs, "inputs_embeds": embeds}

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
