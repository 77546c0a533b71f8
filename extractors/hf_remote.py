"""Remote-code VLMs (models whose ``config.json`` has an ``auto_map``: their modelling code comes
from the checkpoint, not from transformers) through one hook.

Nothing from a checkpoint's code runs unless the user asks: loading one needs the option
``trust_remote_code=true`` (``featkit extract --trust-remote-code``); without it the load is a
one-line error. The model is then driven by a :class:`RemoteCodeAdapter` registered for its
``config.model_type`` with :func:`register_remote_adapter`: the adapter names the vision module,
the projector and the language model (attribute paths), the prompt's image token and the
preprocessing. featkit calls them itself:

- ``visual``: the vision module on the normalised pixels -> its tokens (the output's
  ``tokens_attribute``, e.g. ``last_hidden_state``, or the tensor it returns when that is None;
  ``drop_cls`` drops a leading class token), mean-pooled;
- ``aligned``: the projector on those tokens, mean-pooled;
- ``last_token``: the prompt ``"<image_token> <instruction>"`` with the image token repeated once
  per projected token, the language model's input embeddings with the projected tokens at those
  positions, the language model's last hidden state at the last real token, L2-normalised.

An adapter is a few lines of data, e.g. for a model whose ``config.model_type`` is ``"my_vlm"``::

    register_remote_adapter(RemoteCodeAdapter(
        model_type="my_vlm", vision="vision_tower", projector="mm_projector",
        language_model="llm.model", image_token="<image>",
        preprocessing=Preprocessing(size=448, mean=(0.5,) * 3, std=(0.5,) * 3)))

No adapter ships for a real remote-code model yet (their weights cannot be fetched here to test
one): Qwen-VL-Chat, InternVL-Chat-V1.1 and CogVLM2 need one written against their code.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from extractors.base import ExtractorSpec, Preprocessing, TextEmbedder
from extractors.hf_vlm import DEFAULT_INSTRUCTION, last_token_index, positions_from_mask
from featkit.errors import FeatkitError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class RemoteCodeAdapter:
    """How featkit drives one remote-code VLM (see the module docstring)."""

    model_type: str
    vision: str
    projector: str
    language_model: str
    image_token: str
    preprocessing: Preprocessing
    tokens_attribute: str | None = None
    drop_cls: bool = False
    description: str = ""


_ADAPTERS: dict[str, RemoteCodeAdapter] = {}


def register_remote_adapter(adapter: RemoteCodeAdapter) -> RemoteCodeAdapter:
    """Make ``adapter`` drive every remote-code checkpoint of its ``model_type``."""
    _ADAPTERS[adapter.model_type] = adapter
    return adapter


def remote_adapter(model_type: str, model: str) -> RemoteCodeAdapter:
    """The adapter registered for ``model_type``; none is a one-line error saying how to add one."""
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


def _transform(pre: Preprocessing):
    from torchvision import transforms

    from extractors.transforms import to_rgb

    interpolation = transforms.InterpolationMode(pre.interpolation)
    return transforms.Compose([
        to_rgb,
        transforms.Resize(pre.size, interpolation=interpolation),
        transforms.CenterCrop(pre.size),
        transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std),
    ])


class RemoteCodeVLMExtractor(TextEmbedder):
    """A loaded remote-code VLM driven by its :class:`RemoteCodeAdapter`."""

    def __init__(self, spec: ExtractorSpec, model: Any, tokenizer: Any, *,
                 adapter: RemoteCodeAdapter, weights_identity: str, device: str = "cpu",
                 precision: str = "fp32", instruction: str = DEFAULT_INSTRUCTION) -> None:
        import torch

        self.spec = spec
        self.model = model
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.vision = operator.attrgetter(adapter.vision)(model)
        self.projector = operator.attrgetter(adapter.projector)(model)
        self.language_model = operator.attrgetter(adapter.language_model)(model)
        self.weights_identity = weights_identity
        self.device = str(device)
        self.precision = precision
        self.dtype = next(model.parameters()).dtype
        self.instruction = instruction
        self.transform = _transform(adapter.preprocessing)
        self.preprocessing = {**adapter.preprocessing.to_dict(), "transform": "torchvision"}
        probe = torch.zeros(1, 3, adapter.preprocessing.size, adapter.preprocessing.size,
                            device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            tokens = self._vision_tokens(probe)
            projected = self.projector(tokens)
        self.n_image_tokens = int(projected.shape[1])
        self.kinds = {"visual": int(tokens.shape[-1]), "aligned": int(projected.shape[-1]),
                      "last_token": int(projected.shape[-1])}
        self.image_token_id = tokenizer.convert_tokens_to_ids(adapter.image_token)
        if self.image_token_id == tokenizer.unk_token_id:
            raise FeatkitError(f"{spec.name}: the tokenizer has no image token {adapter.image_token!r}")
        self.prompt = f"{adapter.image_token * self.n_image_tokens} {instruction}"
        self._prompt_ids = tokenizer([self.prompt], return_tensors="pt")["input_ids"].to(self.device)

    def key_settings(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "remote_code_adapter": self.adapter.model_type,
                "pooling": "mean tokens; last_token: last non-padding token, L2-normalised"}

    def pixel_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.adapter.preprocessing.mean), tuple(self.adapter.preprocessing.std)

    def _vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        output = self.vision(pixels)
        attribute = self.adapter.tokens_attribute
        tokens = operator.attrgetter(attribute)(output) if attribute else output
        return tokens[:, 1:] if self.adapter.drop_cls else tokens

    def forward(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        self.check_kinds(kinds)
        with torch.inference_mode():
            tokens = self._vision_tokens(images.to(self.device, self.dtype))
            projected = self.projector(tokens)
            out = {"visual": tokens.mean(dim=1), "aligned": projected.mean(dim=1)}
            if "last_token" in kinds:
                ids = self._prompt_ids.expand(len(images), -1)
                out["last_token"] = self._last_token(ids, torch.ones_like(ids), projected)
        return {k: out[k] for k in kinds}

    def _last_token(self, input_ids, mask, projected=None) -> torch.Tensor:
        import torch

        embeds = self.language_model.get_input_embeddings()(input_ids)
        if projected is not None:
            where = (input_ids == self.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(where, projected.to(embeds.dtype).reshape(-1, embeds.shape[-1]))
        hidden = self.language_model(inputs_embeds=embeds, attention_mask=mask,
                                     position_ids=positions_from_mask(mask),
                                     return_dict=True).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return torch.nn.functional.normalize(hidden[rows, last_token_index(mask)].float(), dim=-1)

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
                vectors = self._last_token(encoded["input_ids"].to(self.device),
                                           encoded["attention_mask"].to(self.device))
                out[start:start + len(vectors)] = vectors.cpu().numpy()
        return out


def load_remote_vlm(spec: ExtractorSpec, path: Any, model_type: str, *, weights_identity: str,
                    device: str = "cpu", precision: str = "fp32",
                    options: Mapping[str, Any] | None = None) -> RemoteCodeVLMExtractor:
    """Load a trusted remote-code checkpoint and wrap it in its adapter (weights never random:
    a parameter missing from the checkpoint is refused)."""
    import torch
    import transformers

    from extractors.hf_weights import first_line
    from featkit.errors import MissingWeightsError

    adapter = remote_adapter(model_type, spec.name)
    on_gpu = str(device).startswith("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32) if on_gpu else torch.float32
    try:
        model, info = transformers.AutoModel.from_pretrained(
            path, trust_remote_code=True, local_files_only=True, dtype=dtype,
            output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=True,
                                                               local_files_only=True)
    except OSError as err:
        raise MissingWeightsError(f"cannot load {spec.name} from {path}: {first_line(err)}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise MissingWeightsError(f"{path}: {len(missing)} parameter(s) missing from the checkpoint "
                                  f"(e.g. {missing[0]}); featkit never runs random weights")
    model = model.to(device).eval().requires_grad_(False)
    return RemoteCodeVLMExtractor(spec, model, tokenizer, adapter=adapter,
                                  weights_identity=weights_identity, device=device,
                                  precision=precision,
                                  instruction=(options or {}).get("instruction") or DEFAULT_INSTRUCTION)
