"""Text embeddings in the space of a model's image features: the text side of zero-shot and
multiple-choice scoring.

:func:`load_text_tower` gives a :class:`TextTower` for

- open_clip models (``open_clip:NAME:TAG``: CLIP, EVA-CLIP, SigLIP, DFN, CoCa, ...): only the
  text tower is built, from the same checkpoint as the image features, and run as the library's
  own ``encode_text`` does, with open_clip's own tokenizer; aligned with the ``aligned`` kind;
- Hugging Face CLIP, SigLIP and SigLIP2 checkpoints (``hf:<id or dir>`` whose config is
  ``clip``, ``siglip`` or ``siglip2``): ``get_text_features``, with the padding each was trained
  with (SigLIPs: to the maximum length; SigLIP2 also lower-cases, as its model card asks);
  aligned with ``aligned``;
- the VLMs (``hf:`` LLaVA / Qwen2-VL and the tiny ones): VLM2Vec last-token embeddings of the
  bare text (:meth:`extractors.base.TextEmbedder.embed_texts`), aligned with ``last_token``;
- the tiny test models: ``test:tiny-clip`` (the text tower of the same seeded CLIP whose visual
  tower the image features come from), the tiny VLMs, ``test:tiny-hf-clip`` and
  ``test:tiny-siglip2``.

Loaders are registered here per family (:func:`register_family`) and per model id
(:func:`register_model`), so the family modules stay untouched. Every tower returns float32,
L2-normalised rows; :meth:`TextTower.identity` is what a cache of its embeddings is keyed by.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extractors import get_spec
from extractors.base import ExtractorSpec, TextEmbedder
from featkit._device import resolve_device
from featkit.errors import FeatkitError, MissingWeightsError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "HF_TEXT_MODEL_TYPES",
    "LoadRequest",
    "TextTower",
    "build_open_clip_text",
    "image_kind",
    "load_text_tower",
    "read_text_state",
    "register_family",
    "register_model",
    "text_families",
]

#: Hugging Face ``model_type`` values whose text tower is embedded with ``get_text_features``.
HF_TEXT_MODEL_TYPES = ("clip", "siglip", "siglip2")
DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`load_text_tower` was asked for, as a loader receives it."""

    spec: ExtractorSpec
    weights: str | None
    adapter: str | None
    device: str
    precision: str


class TextTower:
    """A loaded text encoder: texts -> ``(N, D)`` float32 L2-normalised rows in the space of
    the image features of kind :attr:`image_kind`.

    Subclasses set the attributes and implement :meth:`_encode_batch` (or :meth:`encode`).
    """

    model: str
    image_kind: str
    weights_identity: str
    tokenizer: dict[str, Any]
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = DEFAULT_BATCH_SIZE

    def settings(self) -> dict[str, Any]:
        """What else changes the embeddings (adapter, lower-casing, precision...)."""
        return {} if self.precision == "fp32" else {"precision": self.precision}

    def identity(self) -> dict[str, Any]:
        """Everything that determines an embedding besides the text: the cache key's part."""
        return {"model": self.model, "weights": self.weights_identity,
                "tokenizer": dict(self.tokenizer), "image_kind": self.image_kind,
                "settings": self.settings()}

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """Embed ``texts`` in batches; rows L2-normalised."""
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        texts = [str(t) for t in texts]
        size = batch_size or self.batch_size
        rows = []
        with torch.inference_mode(), tqdm(total=len(texts), desc="texts", unit="text",
                                          disable=not progress, leave=False) as bar:
            for start in range(0, len(texts), size):
                chunk = texts[start:start + size]
                rows.append(torch.nn.functional.normalize(
                    self._encode_batch(chunk).float(), dim=-1).cpu().numpy())
                bar.update(len(chunk))
        if not rows:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(rows).astype(np.float32, copy=False)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _autocast(self):
        """fp16/bf16 autocast on CUDA when asked for; a no-op otherwise."""
        import contextlib

        import torch

        if self.device.startswith("cuda") and self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


Loader = Callable[[LoadRequest], TextTower]
_FAMILY_LOADERS: dict[str, Loader] = {}
_MODEL_LOADERS: dict[str, Loader] = {}
#: the image kind of the test models' text sides (families decide theirs in :func:`image_kind`)
_MODEL_KINDS: dict[str, str] = {}


def register_family(family: str) -> Callable[[Loader], Loader]:
    """Decorator: the text loader of every model of ``family``."""
    def deco(loader: Loader) -> Loader:
        _FAMILY_LOADERS[family] = loader
        return loader
    return deco


def register_model(model_id: str, image_kind: str = "aligned") -> Callable[[Loader], Loader]:
    """Decorator: the text loader of one model id (wins over its family's), whose embeddings
    compare with ``image_kind`` features."""
    def deco(loader: Loader) -> Loader:
        _MODEL_LOADERS[model_id] = loader
        _MODEL_KINDS[model_id] = image_kind
        return loader
    return deco


def text_families() -> list[str]:
    """Families and model ids that have a text side (for error messages)."""
    return [*_FAMILY_LOADERS, *_MODEL_LOADERS]


def image_kind(model: str, weights: str | os.PathLike | None = None) -> str:
    """The image feature kind ``model``'s text embeddings are compared with, without loading
    it: ``aligned`` for the CLIP-style towers, ``last_token`` for the VLMs (an ``hf`` id whose
    spec does not tell is looked up in its config)."""
    spec = get_spec(model)
    if spec.name in _MODEL_KINDS:
        return _MODEL_KINDS[spec.name]
    if spec.family == "hf" and any(dim is None for dim in spec.kinds.values()):
        from extractors.hf_weights import resolve_weights

        path, _, _ = resolve_weights(spec.name.partition(":")[2], str(weights) if weights else None,
                                     None, hash_weights=False)
        return "aligned" if _hf_model_type(path) in HF_TEXT_MODEL_TYPES else "last_token"
    return "last_token" if "last_token" in spec.kinds else "aligned"


def load_text_tower(
    model: str,
    *,
    weights: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    device: str | None = "auto",
    precision: str = "fp32",
) -> TextTower:
    """The text side of ``model`` (id or alias), offline; ``weights``/``adapter`` as for its
    image features. A model without one is a one-line :class:`UnknownNameError`."""
    spec = get_spec(model)
    loader = _MODEL_LOADERS.get(spec.name) or _FAMILY_LOADERS.get(spec.family)
    if loader is None:
        raise UnknownNameError(
            f"{spec.name} has no text tower; zero-shot and text scoring need open_clip models, "
            f"hf CLIP/SigLIP/VLMs or {', '.join(_MODEL_LOADERS)}")
    device = resolve_device(device)
    if device == "cpu":
        precision = "fp32"
    return loader(LoadRequest(spec, str(weights) if weights else None,
                              str(adapter) if adapter else None, device, precision))


# --------------------------------------------------------------------------- open_clip


class OpenClipTextTower(TextTower):
    """An open_clip text tower (``TextTransformer`` or ``HFTextEncoder``) and its tokenizer;
    ``text(tokens)`` is what ``CLIP.encode_text`` / ``CustomTextCLIP.encode_text`` compute
    (CoCa's tower also returns its tokens: the pooled latent is kept)."""

    image_kind = "aligned"

    def __init__(self, model: str, text: Any, tokenizer: Any, *, weights_identity: str,
                 tokenizer_identity: Mapping[str, Any], device: str, precision: str) -> None:
        self.model = model
        self.text = text.to(device).eval().requires_grad_(False)
        self._tokenize = tokenizer
        self.tokenizer = dict(tokenizer_identity)
        self.weights_identity = weights_identity
        self.device = device
        self.precision = precision

    def _encode_batch(self, texts: list[str]):
        tokens = self._tokenize(texts).to(self.device)
        with self._autocast():
            out = self.text(tokens)
        return out[0] if isinstance(out, tuple) else out


def build_open_clip_text(model_cfg: Mapping[str, Any], *, quick_gelu: bool = False):
    """The text tower of an open_clip model config (random init, fp32, CPU); never fetches
    pretrained Hugging Face text weights."""
    from open_clip.model import _build_text_tower

    text_cfg = dict(model_cfg["text_cfg"])
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_pretrained"] = False  # the checkpoint holds the weights
    return _build_text_tower(model_cfg["embed_dim"], text_cfg, quick_gelu, None)


#: checkpoint keys of an open_clip model that belong to neither tower's text side
_NOT_TEXT = ("visual.", "text_decoder.")
_SCALARS = ("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size")


def read_text_state(path: str | Path) -> dict[str, Any]:
    """The text tower's tensors from a full open_clip checkpoint, keyed as the tower names them
    (``text.`` prefixes of CustomTextCLIP/CoCa dropped; CLIP's top-level text keys kept)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys() if not k.startswith(_NOT_TEXT)}
    else:
        state = _torch_state(path)
    if any(k.startswith("text.") for k in state):
        return {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if not k.startswith(_NOT_TEXT) and k not in _SCALARS}


def _torch_state(path: Path) -> dict[str, Any]:
    import torch
    from open_clip.factory import load_state_dict

    try:
        return load_state_dict(str(path))
    except RuntimeError as err:  # OpenAI's TorchScript files
        if "TorchScript" not in str(err):
            raise
    return torch.jit.load(str(path), map_location="cpu").state_dict()


def load_text_state(text: Any, state: Mapping[str, Any], where: str) -> None:
    """Load ``state`` into a text tower; every parameter must be there and fit."""
    try:
        result = text.load_state_dict(dict(state), strict=False)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise FeatkitError(f"{where} does not fit this model's text tower: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise FeatkitError(
            f"{where} does not fit this model's text tower ({len(result.missing_keys)} missing "
            f"keys: {', '.join(result.missing_keys[:5]) or '-'}; {len(result.unexpected_keys)} "
            f"unexpected: {', '.join(result.unexpected_keys[:5]) or '-'}); check that --weights "
            f"belongs to the model named")


def open_clip_tokenizer(name: str | None, model_cfg: Mapping[str, Any]):
    """(tokenizer, identity): open_clip's own tokenizer for a registered model name, else (a
    config only, e.g. the tiny test CLIP) its default BPE tokenizer at the config's context."""
    import open_clip

    text_cfg = model_cfg["text_cfg"]
    context = int(text_cfg.get("context_length", 77))
    if name and open_clip.get_model_config(name) is not None:
        try:
            tokenizer = open_clip.get_tokenizer(name)
        except (OSError, ValueError, ImportError) as err:  # not cached, and no download
            raise MissingWeightsError(
                f"open_clip:{name}: its tokenizer ({text_cfg.get('hf_tokenizer_name')}) is not in "
                f"the Hugging Face cache and featkit never downloads ({str(err).splitlines()[0]})"
            ) from None
    else:
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer = SimpleTokenizer(context_length=context)
    identity = {"library": "open_clip", "class": type(tokenizer).__name__,
                "context_length": int(tokenizer.context_length or context),
                "hf_tokenizer": text_cfg.get("hf_tokenizer_name"),
                "kwargs": dict(text_cfg.get("tokenizer_kwargs") or {})}
    return tokenizer, identity


@register_family("open_clip")
def _load_open_clip(request: LoadRequest) -> TextTower:
    import open_clip

    from extractors.open_clip import tag_source, user_weights
    from extractors.pretrained import resolve_weights

    spec = request.spec
    name, tag = spec.config["model_name"], spec.config["tag"]
    model_cfg = open_clip.get_model_config(name)
    if request.weights:
        path, identity, _ = user_weights(request.weights, model_cfg)
    elif tag:
        path, identity = resolve_weights(tag_source(name, tag)), f"tag:{tag}"
    else:
        raise MissingWeightsError(f"{spec.name} names no pretrained tag, so its text tower needs "
                                  f"--weights PATH (an open_clip checkpoint of {name})")
    try:
        text = build_open_clip_text(model_cfg, quick_gelu=spec.config["quick_gelu"])
    except OSError as err:  # a Hugging Face text encoder whose config is not cached
        raise MissingWeightsError(
            f"{spec.name}: its text encoder ({model_cfg['text_cfg'].get('hf_model_name')}) "
            f"needs its Hugging Face config, not in the cache ({str(err).splitlines()[0]})"
        ) from None
    load_text_state(text, read_text_state(path), str(path))
    tokenizer, tokenizer_identity = open_clip_tokenizer(name, model_cfg)
    return OpenClipTextTower(spec.name, text, tokenizer, weights_identity=identity,
                             tokenizer_identity=tokenizer_identity, device=request.device,
                             precision=request.precision)


@register_model("test:tiny-clip")
def _load_tiny_clip(request: LoadRequest) -> TextTower:
    """The text tower of the seeded tiny CLIP the image features come from (the whole model is
    built with the same seed, as :func:`extractors.tiny.load_tiny_clip` builds it)."""
    import open_clip
    import torch

    from extractors.open_clip import user_weights
    from extractors.tiny import TINY_CLIP_CONFIG

    identity = "random:seed0"
    if request.weights:
        path, identity, _ = user_weights(request.weights, TINY_CLIP_CONFIG)
        state, where = read_text_state(path), str(path)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = open_clip.CLIP(**TINY_CLIP_CONFIG)
        state, where = read_text_state_of(model), "the seeded tiny CLIP"
    text = build_open_clip_text(TINY_CLIP_CONFIG)
    load_text_state(text, state, where)
    tokenizer, tokenizer_identity = open_clip_tokenizer(None, TINY_CLIP_CONFIG)
    return OpenClipTextTower(request.spec.name, text, tokenizer, weights_identity=identity,
                             tokenizer_identity=tokenizer_identity, device=request.device,
                             precision=request.precision)


def read_text_state_of(model: Any) -> dict[str, Any]:
    """:func:`read_text_state` of a built open_clip model's ``state_dict``."""
    state = model.state_dict()
    if any(k.startswith("text.") for k in state):
        return {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if not k.startswith(_NOT_TEXT) and k not in _SCALARS}


# --------------------------------------------------------------------------- Hugging Face


class HFTextTower(TextTower):
    """``get_text_features`` of a Hugging Face CLIP, SigLIP or SigLIP2 checkpoint, texts padded
    on the right (to the longest for CLIP, to the maximum length for the SigLIPs)."""

    image_kind = "aligned"

    def __init__(self, model: str, hf_model: Any, tokenizer: Any, *, model_type: str,
                 weights_identity: str, device: str, precision: str) -> None:
        self.model = model
        self.hf_model = hf_model
        tokenizer.padding_side = "right"  # as they were trained: CLIP pools at the end token,
        self._tokenizer = tokenizer  # the SigLIPs at the last position of the padded text
        self.model_type = model_type
        self.max_length = int(hf_model.config.text_config.max_position_embeddings)
        self.padding = "longest" if model_type == "clip" else "max_length"
        self.lowercase = model_type == "siglip2"
        self.weights_identity = weights_identity
        self.device = device
        self.precision = precision
        self.tokenizer = {"library": "transformers", "class": type(tokenizer).__name__,
                          "padding": self.padding, "padding_side": "right",
                          "max_length": self.max_length,
                          "vocab_size": len(tokenizer)}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "lowercase": self.lowercase}

    def _encode_batch(self, texts: list[str]):
        if self.lowercase:
            texts = [t.lower() for t in texts]
        encoded = self._tokenizer(texts, padding=self.padding, max_length=self.max_length,
                                  truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in encoded.items()
                  if k in ("input_ids", "attention_mask")}
        return self.hf_model.get_text_features(**inputs, return_dict=True).pooler_output


def _hf_model_type(path: Path) -> str:
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as err:
        raise MissingWeightsError(f"cannot read {path / 'config.json'}: {err}") from None


def load_hf_text_tower(model: str, path: Path, *, weights_identity: str, device: str,
                       precision: str) -> HFTextTower:
    """A CLIP/SigLIP/SigLIP2 ``save_pretrained`` directory as a :class:`HFTextTower`."""
    import torch
    from transformers import AutoTokenizer, CLIPModel, Siglip2Model, SiglipModel

    model_type = _hf_model_type(path)
    classes = {"clip": CLIPModel, "siglip": SiglipModel, "siglip2": Siglip2Model}
    dtype = torch.float32
    if device.startswith("cuda") and precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    try:
        hf_model, info = classes[model_type].from_pretrained(
            path, dtype=dtype, local_files_only=True, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as err:
        raise MissingWeightsError(f"cannot load {model} from {path}: "
                                  f"{str(err).splitlines()[0]}") from None
    missing = [k for k in info.get("missing_keys") or [] if k.startswith("text")]
    if missing:
        raise MissingWeightsError(f"{path}: {len(missing)} text parameter(s) missing from the "
                                  f"checkpoint (e.g. {missing[0]}); featkit never runs random weights")
    hf_model = hf_model.to(device).eval().requires_grad_(False)
    return HFTextTower(model, hf_model, tokenizer, model_type=model_type,
                       weights_identity=weights_identity, device=device, precision=precision)


class VLMTextTower(TextTower):
    """VLM2Vec last-token embeddings of the bare text by a loaded VLM extractor."""

    image_kind = "last_token"

    def __init__(self, extractor: TextEmbedder) -> None:
        self.extractor = extractor
        self.model = extractor.spec.name
        self.weights_identity = extractor.weights_identity
        self.device = extractor.device
        self.precision = extractor.precision
        self.batch_size = 32
        self.tokenizer = {"library": "transformers", "pooling": "last non-padding token"}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "adapter": self.extractor.adapter_identity}

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        return self.extractor.embed_texts([str(t) for t in texts],
                                          batch_size=batch_size or self.batch_size,
                                          progress=progress)


def _load_vlm(request: LoadRequest) -> TextTower:
    from extractors import load_extractor

    extractor = load_extractor(request.spec.name, weights=request.weights, adapter=request.adapter,
                               device=request.device, precision=request.precision)
    if not isinstance(extractor, TextEmbedder):
        raise UnknownNameError(f"{request.spec.name} has no text embeddings")
    return VLMTextTower(extractor)


@register_family("hf")
def _load_hf(request: LoadRequest) -> TextTower:
    from extractors.hf_weights import resolve_weights

    source = request.spec.name.partition(":")[2]
    path, identity, adapter = resolve_weights(source, request.weights, request.adapter)
    if _hf_model_type(path) in HF_TEXT_MODEL_TYPES:
        if adapter:
            raise FeatkitError(f"--adapter {adapter}: adapters apply to the hf VLMs, not to "
                               f"{request.spec.name}'s text tower")
        return load_hf_text_tower(request.spec.name, path, weights_identity=identity,
                                  device=request.device, precision=request.precision)
    return _load_vlm(request)


@register_family("test")
def _load_tiny(request: LoadRequest) -> TextTower:
    """The tiny test models with a text side: the VLMs (last-token texts) and the transformers
    dual encoders (their text tower, from the same ``save_pretrained`` directory); the tiny
    open_clip CLIP has its own loader above."""
    from extractors.hf_weights import resolve_weights
    from extractors.tiny import tiny_model_dir

    spec = request.spec
    if "last_token" in spec.kinds:
        return _load_vlm(request)
    try:
        path, identity = tiny_model_dir(spec.name), "random:seed0"
    except UnknownNameError:
        raise UnknownNameError(f"{spec.name} has no text tower (tiny models with one: "
                               f"test:tiny-clip, the tiny VLMs, test:tiny-hf-clip, "
                               f"test:tiny-siglip2)") from None
    if request.weights:
        path, identity, _ = resolve_weights(spec.name, request.weights, None)
    if _hf_model_type(path) not in HF_TEXT_MODEL_TYPES:
        raise UnknownNameError(f"{spec.name} has no text tower")
    return load_hf_text_tower(spec.name, path, weights_identity=identity, device=request.device,
                              precision=request.precision)
