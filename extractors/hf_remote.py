"""Remote-code VLMs (models whose ``config.json`` has an ``auto_map``: their modelling code comes
from the checkpoint, not from transformers) through one hook.

Nothing from a checkpoint's code runs unless the user asks: loading one needs the option
``trust_remote_code=true`` (``featkit extract --trust-remote-code``); without it the load is a
one-line error. The model is then driven by a :class:`RemoteCodeAdapter` registered for its
``config.model_type`` with :func:`register_remote_adapter` (the adapters of the real models,
Qwen-VL-Chat, InternVL-Chat, CogVLM2 and Phi-3.5-V / VLM2Vec-Full, are in
:mod:`extractors.hf_remote_adapters` with the adapter type itself, registered when this module
is imported). featkit
calls the model's parts itself, in one vision pass per batch:

- ``visual``: the vision tokens the projector receives, mean-pooled;
- ``aligned``: the image tokens the language model receives, mean-pooled;
- ``last_token``: the prompt ``[tokenizer's leading specials] [image_start] image_token x N
  [image_end] " <instruction>"`` with the ``aligned`` tokens as the N image embeddings, the
  language model's last hidden state at the last real token, L2-normalised.

What each adapter field does:

``architectures``
    The ``config.json`` ``architectures`` that select the adapter when the checkpoint's config
    names no ``model_type`` (CogVLM2's hub config has none).
``vision``, ``projector``, ``tokens_attribute``, ``drop_cls``
    The default encoder: ``vision(pixels)`` (its ``tokens_attribute``, e.g. ``last_hidden_state``,
    or the tensor it returns; a leading class token dropped with ``drop_cls``) gives ``visual``;
    ``projector`` on those gives ``aligned``.
``encode``
    A named function ``(model, pixels) -> (visual tokens, aligned tokens)`` that replaces the
    default encoder for models whose projector is not one module (Qwen-VL's resampler, InternVL's
    pixel shuffle + ``mlp1``, CogVLM2's conv + GLU + boi/eoi, Phi-3.5-V's HD transform). It calls
    the model's own methods; :func:`captured` reads an inner module's tensor during that call.
``image_size``
    A named function ``config -> int``: the input size as the model's code reads it from its
    config (default: the adapter's ``preprocessing.size``).
``image_transform``
    A named function ``(preprocessing, options) -> (transform, key settings)`` for models whose
    pixels are not one normalised square (Phi-3.5-V's crops); ``options`` are the
    ``processor_kwargs`` given to :func:`load_remote_vlm` (e.g. ``num_crops``) over the
    checkpoint's ``preprocessor_config.json``. Default: resize (``preprocessing.resize_mode``:
    shortest edge + centre crop, or ``"squash"``), normalise.
``image_token``, ``image_start``, ``image_end``, ``text_specials``
    The prompt: the filler token at the image positions (None: the tokenizer's pad token), the
    tokens around it, and whether the text after the image is tokenized with the tokenizer's
    special tokens again (VLM2Vec's Phi-3-V processor does: a second BOS).
``pad_token``
    The token the model's own code pads with when the checkpoint's tokenizer names no pad token
    (CogVLM2's Llama-3 tokenizer: its code fills the image with id 128002,
    ``<|reserved_special_token_0|>``; Qwen-VL's: ``<|endoftext|>``): featkit then pads texts and
    marks the image with it.
``auto_class``
    The transformers auto class the checkpoint's ``auto_map`` names for the model
    (``AutoModelForCausalLM`` for the real ones); attribute paths start from it.
``processor_options``
    The ``processor_kwargs`` names the adapter's ``image_transform`` takes.
``config_overrides``
    A named function ``dtype -> {config attribute: value}`` passed to ``from_pretrained`` for
    models whose code casts itself by config flags rather than the dtype it is loaded in
    (Qwen-VL's ``bf16``/``fp16``/``fp32``): the model then runs at featkit's precision.
``language_model``, ``lm_method``, ``lm_inputs``
    The decoder is ``getattr(<language_model>, lm_method)(input_ids=..., attention_mask=...,
    position_ids=..., use_cache=False, return_dict=True, **lm_inputs(prompt))``. Its token
    embedding (``get_input_embeddings()``) is hooked for that call to return featkit's
    embeddings (the image tokens in place), because remote forwards differ on
    ``inputs_embeds`` (Qwen-VL's tests ``input_ids`` for image tags first, VLM2Vec's Phi-3-V
    rebuilds the embeddings from ``input_ids``); the image block's ids are replaced by the filler
    so no forward sees an image tag. ``lm_inputs``: a named function giving extra inputs (CogVLM2's
    ``token_type_ids`` and its position rule) and position ids (default: counted over real tokens).

An adapter for a model whose ``config.model_type`` is ``"my_vlm"``::

    register_remote_adapter(RemoteCodeAdapter(
        model_type="my_vlm", vision="vision_tower", projector="mm_projector",
        language_model="llm.model", image_token="<image>",
        preprocessing=Preprocessing(size=448, mean=(0.5,) * 3, std=(0.5,) * 3)))
"""

from __future__ import annotations

import contextlib
import json
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extractors.base import ExtractorSpec, Preprocessing, TextEmbedder
from extractors.hf_remote_adapters import SHIPPED, Prompt, RemoteCodeAdapter, captured
from extractors.hf_vlm import DEFAULT_INSTRUCTION, last_token_index, positions_from_mask
from extractors.vlm2vec import Vlm2VecProtocol
from featkit.errors import FeatkitError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np
    import torch


_ADAPTERS: dict[str, RemoteCodeAdapter] = {}


def register_remote_adapter(adapter: RemoteCodeAdapter) -> RemoteCodeAdapter:
    """Make ``adapter`` drive every remote-code checkpoint of its ``model_type``."""
    _ADAPTERS[adapter.model_type] = adapter
    return adapter


for _shipped in SHIPPED:
    register_remote_adapter(_shipped)

__all__ = ["Prompt", "RemoteCodeAdapter", "RemoteCodeVLMExtractor", "captured", "check_trusted",
           "load_remote_vlm", "register_remote_adapter", "remote_adapter"]


def remote_adapter(model_type: str, model: str,
                   architectures: Sequence[str] = ()) -> RemoteCodeAdapter:
    """The adapter registered for ``model_type`` (the shipped ones are registered when this
    module is imported), else the one declaring one of the config's ``architectures`` (for
    checkpoints whose ``config.json`` names no ``model_type``, as CogVLM2's); none is a one-line
    error saying how to add one."""
    if model_type in _ADAPTERS:
        return _ADAPTERS[model_type]
    by_architecture = [adapter for adapter in _ADAPTERS.values()
                       if set(adapter.architectures) & set(architectures)]
    if by_architecture:
        return by_architecture[0]
    if model_type not in _ADAPTERS:
        known = ", ".join(_ADAPTERS) or "none registered"
        raise UnknownNameError(
            f"{model} is a remote-code model of type {model_type!r} and no adapter drives it "
            f"(adapters: {known}); register one with extractors.hf_remote.register_remote_adapter"
        )
    return _ADAPTERS[model_type]


def check_trusted(config: Mapping[str, Any], model: str, trusted: bool) -> bool:
    """Whether ``config`` (a ``config.json``) names remote code; remote code without ``trusted``
    is a one-line :class:`FeatkitError`."""
    if not config.get("auto_map"):
        return False
    if not trusted:
        raise FeatkitError(
            f"{model} runs modelling code shipped with the checkpoint (config.json auto_map); "
            f"featkit runs it only when asked: pass --trust-remote-code (option "
            f"trust_remote_code=true) if you trust its source"
        )
    return True


def square_transform(pre: Preprocessing):
    """PIL image -> normalised ``(3, size, size)`` tensor: shortest edge + centre crop, or the
    whole image resized to the square (``resize_mode="squash"``, Qwen-VL's and CogVLM2's own)."""
    from torchvision import transforms

    from extractors.transforms import to_rgb

    interpolation = transforms.InterpolationMode(pre.interpolation)
    if pre.resize_mode == "squash":
        resize = [transforms.Resize((pre.size, pre.size), interpolation=interpolation)]
    else:
        resize = [transforms.Resize(pre.size, interpolation=interpolation),
                  transforms.CenterCrop(pre.size)]
    return transforms.Compose([to_rgb, *resize, transforms.ToTensor(),
                               transforms.Normalize(pre.mean, pre.std)])


def _default_encode(adapter: RemoteCodeAdapter, model: Any, pixels: torch.Tensor):
    output = operator.attrgetter(adapter.vision)(model)(pixels)
    tokens = operator.attrgetter(adapter.tokens_attribute)(output) if adapter.tokens_attribute else output
    tokens = tokens[:, 1:] if adapter.drop_cls else tokens
    return tokens, operator.attrgetter(adapter.projector)(model)(tokens)


@contextlib.contextmanager
def _runs_on_this_transformers(model: str) -> Iterator[None]:
    """A checkpoint's own code failing on its first call (written for another transformers:
    a removed helper, a changed signature) is one line naming the error, not a traceback."""
    import transformers

    try:
        yield
    except FeatkitError:
        raise
    except Exception as err:  # the checkpoint's code, not featkit's: any failure is reported
        from extractors.hf_weights import first_line

        message = first_line(err)[:300]
        raise FeatkitError(
            f"{model}: its modelling code fails on a first image with transformers "
            f"{transformers.__version__} ({type(err).__name__}: {message}); it may need a "
            f"version of transformers it was written for, or a fix in the checkpoint's code"
        ) from None


class RemoteCodeVLMExtractor(TextEmbedder):
    """A loaded remote-code VLM driven by its :class:`RemoteCodeAdapter`."""

    def __init__(self, spec: ExtractorSpec, model: Any, tokenizer: Any, *,
                 adapter: RemoteCodeAdapter, weights_identity: str, device: str = "cpu",
                 precision: str = "fp32", instruction: str = DEFAULT_INSTRUCTION,
                 image_options: Mapping[str, Any] | None = None,
                 vlm2vec: Vlm2VecProtocol | None = None,
                 adapter_identity: str | None = None) -> None:
        import torch
        from PIL import Image

        self.spec = spec
        self.model = model
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.language_model = operator.attrgetter(adapter.language_model)(model)
        self.weights_identity = weights_identity
        self.device = str(device)
        self.precision = precision
        self.dtype = next(model.parameters()).dtype
        self.instruction = instruction
        self.vlm2vec = vlm2vec
        self.adapter_identity = adapter_identity
        pre = adapter.preprocessing
        if adapter.image_size is not None:
            pre = replace(pre, size=int(adapter.image_size(model.config)))
        self.image_preprocessing = pre
        if adapter.image_transform is not None:
            self.transform, self.image_settings = adapter.image_transform(pre, dict(image_options or {}))
        else:
            self.transform, self.image_settings = square_transform(pre), {}
        self.preprocessing = {**pre.to_dict(), "transform": "torchvision", **self.image_settings}
        probe = self.transform(Image.new("RGB", (pre.size, pre.size)))[None]
        with torch.inference_mode(), _runs_on_this_transformers(spec.name):
            visual, aligned = self._encode(probe.to(self.device, self.dtype))
            self.n_image_tokens = int(aligned.shape[1])
            self.kinds = {"visual": int(visual.shape[-1]), "aligned": int(aligned.shape[-1]),
                          "last_token": int(aligned.shape[-1])}
            self._build_prompt()
            self.decode(self.image_prompt(1), aligned)  # the decoder runs too, before any data

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise FeatkitError(f"{self.spec.name}: the tokenizer has no token {token!r}")
        return int(token_id)

    def _build_prompt(self) -> None:
        import torch

        adapter, tokenizer = self.adapter, self.tokenizer
        if adapter.image_token is None:
            if tokenizer.pad_token_id is None:
                raise FeatkitError(f"{self.spec.name}: the tokenizer has no pad token to mark the image")
            self.image_token_id = int(tokenizer.pad_token_id)
        else:
            self.image_token_id = self._token_id(adapter.image_token)
        lead = list(tokenizer("")["input_ids"])
        start = [self._token_id(adapter.image_start)] if adapter.image_start else []
        end = [self._token_id(adapter.image_end)] if adapter.image_end else []
        after_image = (f"\n{self.instruction}\n" if self.vlm2vec is not None  # VLM2Vec's eval prompt
                       else f" {self.instruction}")
        text = list(tokenizer(after_image,
                              add_special_tokens=adapter.text_specials)["input_ids"])
        ids = lead + start + [self.image_token_id] * self.n_image_tokens + end + text
        block = torch.zeros(len(ids), dtype=torch.bool)
        block[len(lead):len(lead) + len(start) + self.n_image_tokens + len(end)] = True
        image = torch.zeros(len(ids), dtype=torch.bool)
        image[len(lead) + len(start):len(lead) + len(start) + self.n_image_tokens] = True
        self._prompt_ids = torch.tensor([ids], device=self.device)
        self._image_mask = image[None].to(self.device)
        self._block_mask = block[None].to(self.device)

    def key_settings(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "remote_code_adapter": self.adapter.model_type,
                "adapter": self.adapter_identity,
                **dict(self.adapter.settings), **self.image_settings,
                **({"vlm2vec": self.vlm2vec.settings()} if self.vlm2vec is not None else {}),
                "pooling": "mean tokens; last_token: last non-padding token, L2-normalised"}

    def pixel_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.image_preprocessing.mean), tuple(self.image_preprocessing.std)

    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.adapter.encode is not None:
            return self.adapter.encode(self.model, pixels)
        return _default_encode(self.adapter, self.model, pixels)

    def image_prompt(self, batch: int) -> Prompt:
        """The image prompt's ids for ``batch`` images (no padding: every image gives the same)."""
        import torch

        ids = self._prompt_ids.expand(batch, -1)
        return Prompt(ids, torch.ones_like(ids), self._image_mask.expand(batch, -1),
                      self._block_mask.expand(batch, -1))

    def forward(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        self.check_kinds(kinds)
        with torch.inference_mode():
            visual, aligned = self._encode(images.to(self.device, self.dtype))
            out = {"visual": visual.float().mean(dim=1), "aligned": aligned.float().mean(dim=1)}
            if "last_token" in kinds:
                out["last_token"] = self.decode(self.image_prompt(len(images)), aligned)
        return {k: out[k] for k in kinds}

    def decode(self, prompt: Prompt, image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, D)`` L2-normalised last-token states of the decoder on ``prompt``, the image
        positions holding ``image_tokens`` (see the module docstring for the call)."""
        import torch

        embedding = self.language_model.get_input_embeddings()
        embeds = embedding(prompt.input_ids)
        if image_tokens is not None:
            flat = image_tokens.to(embeds.dtype).reshape(-1, embeds.shape[-1])
            embeds = embeds.masked_scatter(prompt.image_mask.unsqueeze(-1), flat)
        inputs = {"position_ids": positions_from_mask(prompt.attention_mask)}
        if self.adapter.lm_inputs is not None:
            inputs.update(self.adapter.lm_inputs(prompt))
        calls: list[int] = []

        def replace_embeddings(_module, _args, _out):
            calls.append(1)
            return embeds

        handle = embedding.register_forward_hook(replace_embeddings)
        try:
            hidden = getattr(self.language_model, self.adapter.lm_method)(
                input_ids=prompt.input_ids.masked_fill(prompt.block_mask, self.image_token_id),
                attention_mask=prompt.attention_mask, use_cache=False, return_dict=True,
                **inputs).last_hidden_state
        finally:
            handle.remove()
        if len(calls) != 1:
            raise FeatkitError(f"{self.spec.name}: {self.adapter.language_model}."
                               f"{self.adapter.lm_method} called its token embedding {len(calls)} "
                               f"times (the hook expects one call per forward)")
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return torch.nn.functional.normalize(hidden[rows, last_token_index(prompt.attention_mask)].float(), dim=-1)

    def embed_texts(self, texts: Sequence[str], *, instruction: str | None = None,
                    batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """``(len(texts), D)`` float32 last-token embeddings of ``"<instruction> <text>"``."""
        import numpy as np
        import torch

        prompts = [f"{instruction} {text}" if instruction else str(text) for text in texts]
        out = np.zeros((len(prompts), self.kinds["last_token"]), np.float32)
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                encoded = self.tokenizer(prompts[start:start + batch_size], padding=True,
                                         return_tensors="pt")
                ids = encoded["input_ids"].to(self.device)
                none = torch.zeros_like(ids, dtype=torch.bool)
                vectors = self.decode(Prompt(ids, encoded["attention_mask"].to(self.device), none, none))
                out[start:start + len(vectors)] = vectors.cpu().numpy()
        return out


def _declared_architectures(path: Path) -> tuple[str, ...]:
    config = path / "config.json"
    return tuple(json.loads(config.read_text()).get("architectures") or ()) if config.is_file() else ()


def _published_processor_settings(path: Path) -> dict[str, Any]:
    config = path / "preprocessor_config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def _declare_pad_token(tokenizer: Any, adapter: RemoteCodeAdapter, model: str) -> None:
    """Give a tokenizer without a pad token the adapter's (the model's code's own choice)."""
    if tokenizer.pad_token_id is not None or adapter.pad_token is None:
        return
    token_id = tokenizer.convert_tokens_to_ids(adapter.pad_token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise FeatkitError(f"{model}: its tokenizer has no pad token and no {adapter.pad_token!r} "
                           f"(the {adapter.model_type} adapter's pad token)")
    tokenizer.pad_token = adapter.pad_token


def load_remote_vlm(spec: ExtractorSpec, path: Any, model_type: str, *, weights_identity: str,
                    device: str = "cpu", precision: str = "fp32",
                    options: Mapping[str, Any] | None = None,
                    processor_kwargs: Mapping[str, Any] | None = None,
                    vlm2vec: Vlm2VecProtocol | None = None,
                    adapter_dir: str | None = None) -> RemoteCodeVLMExtractor:
    """Load a trusted remote-code checkpoint and wrap it in its adapter (weights never random:
    a parameter missing from the checkpoint is refused). ``processor_kwargs``: image settings
    the adapter accepts (its ``processor_options``, e.g. Phi-3.5-V's ``num_crops``), over the
    checkpoint's ``preprocessor_config.json``; they enter the cache key. ``vlm2vec``: embed as
    VLM2Vec's evaluation does (its prompt; its ``processor_kwargs`` under the caller's).
    ``adapter_dir``: a peft adapter directory merged into the weights (VLM2Vec's LoRA on Phi-3.5-V)."""
    import torch
    import transformers

    from extractors.hf_weights import first_line, merge_adapter, parameters_not_as_saved
    from featkit.errors import MissingWeightsError

    adapter = remote_adapter(model_type, spec.name, _declared_architectures(Path(path)))
    if vlm2vec is not None:
        processor_kwargs = {**vlm2vec.processor_kwargs, **(processor_kwargs or {})}
    unknown = sorted(set(processor_kwargs or {}) - set(adapter.processor_options))
    if unknown:
        raise FeatkitError(f"{spec.name}: processor_kwargs {', '.join(unknown)} are not image "
                           f"settings of the {model_type} adapter (it takes: "
                           f"{', '.join(adapter.processor_options) or 'none'})")
    published = _published_processor_settings(Path(path))
    image_options = {name: published[name] for name in adapter.processor_options if name in published}
    image_options.update(processor_kwargs or {})
    on_gpu = str(device).startswith("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32) if on_gpu else torch.float32
    overrides = adapter.config_overrides(dtype) if adapter.config_overrides is not None else {}
    try:
        model, info = getattr(transformers, adapter.auto_class).from_pretrained(
            path, trust_remote_code=True, local_files_only=True, dtype=dtype,
            output_loading_info=True, **overrides)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=True,
                                                               local_files_only=True)
    except OSError as err:
        raise MissingWeightsError(f"cannot load {spec.name} from {path}: {first_line(err)}") from None
    except ImportError as err:  # transformers checks the remote code's imports first
        raise FeatkitError(f"{spec.name}: its modelling code needs a package that is not "
                           f"installed: {first_line(err)}") from None
    _declare_pad_token(tokenizer, adapter, spec.name)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise MissingWeightsError(f"{path}: {len(missing)} parameter(s) missing from the checkpoint "
                                  f"(e.g. {missing[0]}); featkit never runs random weights")
    redrawn = parameters_not_as_saved(model, Path(path))
    if redrawn:
        raise MissingWeightsError(
            f"{path}: {len(redrawn)} parameter(s) differ from the checkpoint after loading (e.g. "
            f"{redrawn[0]}): its modelling code re-initialised them (transformers 5 runs a model's "
            f"_init_weights on modules holding a buffer the checkpoint lacks); featkit never runs "
            f"weights that are not the checkpoint's -- the code needs a guard there")
    adapter_identity = None
    if adapter_dir:
        model, adapter_identity = merge_adapter(model, adapter_dir)
    model = model.to(device).eval().requires_grad_(False)
    return RemoteCodeVLMExtractor(spec, model, tokenizer, adapter=adapter,
                                  weights_identity=weights_identity, device=device,
                                  precision=precision,
                                  instruction=(options or {}).get("instruction") or DEFAULT_INSTRUCTION,
                                  image_options=image_options, vlm2vec=vlm2vec,
                                  adapter_identity=adapter_identity)
