"""Hugging Face transformers models (family ``hf``): the VLMs of :mod:`extractors.hf_archs`
through transformers 5's common interface, the image-text dual encoders of
:mod:`extractors.hf_towers` (CLIP, SigLIP, SigLIP2; their kinds are described there), and
remote-code VLMs through the hook of :mod:`extractors.hf_remote` (``--trust-remote-code``).

Ids are ``hf:<hub id or local directory>``. VLM feature kinds (all ``(B, D)``):

``visual``
    The vision tokens the projector receives, mean-pooled. LLaVA, LLaVA-NeXT, LLaVA-OneVision,
    InternVL: hidden states at the config's ``vision_feature_layer`` (-2 for LLaVA-1.5; InternVL's
    -1 is the tower's ``last_hidden_state``) with its ``vision_feature_select_strategy``
    (``"default"`` drops CLS), before InternVL's pixel shuffle. Qwen2/2.5/3-VL: the last vision
    block's patch tokens before the merger. Idefics3, PaliGemma: the tower's ``last_hidden_state``
    (the connector's input, before Idefics3's pixel shuffle). BLIP-2: the ViT's
    ``last_hidden_state``, every token, what the Q-Former attends to. Molmo2: the tower layers
    of ``adapter_config.vision_feature_layer`` concatenated, before the 2x2 pooling
    cross-attention, averaged over exactly the patches the pooling reads (the whole global view
    and each canvas patch once, overlap margins left out). Phi-4-multimodal:
    ``hidden_states[vision_config.feature_layer]`` (-2) before its 2x2 average pool, over every
    patch of the global image and each sub-image (padding patches left out).
``cls``
    Towers with a CLS token (CLIP, InternViT, BLIP-2's ViT): the CLS token at the same layer, of
    the whole image (LLaVA-NeXT's base image, InternVL's thumbnail tile).
``aligned``
    Exactly the image tokens the language model receives, mean-pooled (``get_image_features``'
    ``pooler_output``; FG-BMK Table 4, "aligned"): the projector's output for the selected
    tokens; LLaVA-NeXT/OneVision: the projected tiles unpadded and packed with the
    ``image_newline`` embedding per row; BLIP-2: the Q-Former queries after the language
    projection (``qformer`` is the query outputs themselves); Qwen3-VL: the merger output (its
    DeepStack features, added inside the LM, are not part of it); Molmo2: the adapter's pooled,
    projected token per 2x2 window (the LM adds them to the ``<im_patch>`` embeddings; structure
    tokens are not included); Phi-4-multimodal: the sub-image grid with a separator ending each
    row, the global separator, then the global image with its row separators, all projected.
``last_token``
    VLM2Vec: prompt ``"<image-token> <instruction>"`` (no chat template; default instruction
    ``"Represent the given image."``; BLIP-2's processor puts its query tokens first itself),
    the base model's final-layer hidden state (after the final norm) at the last non-padding
    token found from the attention mask, L2-normalised. A VLM2Vec checkpoint (recognised by
    name, or ``--option vlm2vec=v1|v2``) is embedded as VLM2Vec's own evaluation does instead:
    prompt ``"<image-token>\n<instruction>\n"``, its image resizing and processor settings per
    backbone (:mod:`extractors.vlm2vec`). The LM head is never called, so no
    full-vocabulary logits are computed (BLIP-2, whose forward ends in the head, runs its
    language model alone on the embeddings its forward would build). PaliGemma's prompts and
    texts are prefixes (bidirectional attention), as its processor marks them.
``cls@L``, ``patch_mean@L``, ``last_token@L``
    The vision tower's ``hidden_states[L]`` (its class token; the mean of its patch tokens over
    every tile, class token excluded) and the language model's ``hidden_states[L]`` at the last
    real token, L2-normalised (``last_token@-1`` is ``last_token``), all from the same forward
    pass (see :mod:`extractors.layers`). LLaVA's ``cls`` is ``cls@-2``.

Images: fixed-grid models get their image processor applied to one image. Models whose
processor varies the number of tokens with the image get the shortest edge resized to a fixed
``image_size`` (option) and a centre square crop first, so every image gives the same tokens
and a batch stacks: Qwen-VL (default 448, a multiple of 28), LLaVA-NeXT/OneVision (default two
tiles: a 2 x 2 grid of tiles plus the base image, every tile weighing the same in ``visual``),
InternVL (default one tile; larger sizes give its processor's grid of tiles plus a thumbnail),
Idefics3 (its processor's tiles plus the global image), Molmo2 (default: a 2 x 2 canvas of
overlapping crops plus the global view), Phi-4-multimodal (default: 2 x 2 sub-images plus the
global image).

Weights load offline only: ``--weights DIR`` (a ``save_pretrained`` directory), a local directory
as the id, or the Hugging Face cache for hub ids; nothing is downloaded and a checkpoint with
missing parameters is refused (never random init). ``--adapter DIR`` applies a peft adapter
(merged into the weights); a directory holding an adapter and no model weights (a LoRA
repository, with or without a ``config.json``) loads its base model the same way, plus the
adapter. Needs transformers >= 5 (4.x exposes the image features differently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from extractors import add_alias, register, vlm2vec
from extractors.base import ExtractorSpec, Family, OptionSpec
from extractors.hf_archs import (
    ARCHITECTURES,
    DEFAULT_QWEN_IMAGE_SIZE,
    supported,
    vision_shape_from_json,
)
from extractors.hf_remote import RemoteCodeVLMExtractor, check_trusted, load_remote_vlm
from extractors.hf_towers import TOWER_ARCHITECTURES, HFTowerExtractor
from extractors.hf_vlm import (
    DEFAULT_INSTRUCTION,
    HFVLMExtractor,
    last_token_index,
    positions_from_mask,
    square_crop,
)
from extractors.hf_weights import base_model_reference, first_line, merge_adapter, resolve_weights
from extractors.layers import LayerSpan
from featkit.errors import FeatkitError, MissingWeightsError, UnknownNameError

__all__ = ["DEFAULT_INSTRUCTION", "HFFamily", "HFVLMExtractor", "KNOWN_SPECS", "architectures",
           "last_token_index", "load_hf_vlm", "positions_from_mask", "square_crop"]

MIN_TRANSFORMERS = (5, 0)
KINDS = ("visual", "cls", "aligned", "last_token")
#: per-layer kinds of a model whose depths are known only once it is loaded
UNKNOWN_LAYERS = {"cls": LayerSpan(None, None), "patch_mean": LayerSpan(None, None),
                  "last_token": LayerSpan(None, None)}
#: The options every hf model (and its tiny twins) accepts.
OPTIONS = (
    OptionSpec("instruction", str, DEFAULT_INSTRUCTION, changes_features=True,
               help="the instruction of the last_token prompt '<image-token> <instruction>'"),
    OptionSpec("trust_remote_code", bool, False, changes_features=False,
               help="run the modelling code a checkpoint ships (config.json auto_map), through "
                    "its registered adapter (extractors.hf_remote); off unless asked"),
    OptionSpec("vlm2vec", str, vlm2vec.AUTO, changes_features=True,
               help="embed as VLM2Vec's own evaluation does (its prompt, image resizing and "
                    "processor settings; extractors.vlm2vec): auto (published VLM2Vec checkpoints, "
                    "by name), off, v1 or v2"),
    OptionSpec("image_size", int, None, changes_features=True,
               help=f"models with dynamic resolution (Qwen2/2.5/3-VL, LLaVA-NeXT/OneVision, "
                    f"InternVL, Idefics3, SmolVLM, Molmo2, Phi-4-multimodal): the fixed square "
                    f"input size in pixels (Qwen default {DEFAULT_QWEN_IMAGE_SIZE}); LLaVA's and "
                    f"PaliGemma's processors fix their own"),
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _known(alias: str, hub_id: str, dims: dict[str, int], description: str, *,
           vision: tuple[int, int, bool], text: tuple[int, int] | None) -> ExtractorSpec:
    """A named checkpoint: ``vision`` (depth, width, class token) and ``text`` (the language
    model's depth and width; None for a dual encoder) give its layer kinds."""
    add_alias(alias, f"hf:{hub_id}")
    depth, width, has_cls = vision
    layers = {"patch_mean": LayerSpan(depth, width)}
    if text is not None:
        layers["last_token"] = LayerSpan(*text)
    if has_cls:
        layers = {"cls": LayerSpan(depth, width), **layers}
    return ExtractorSpec(
        name=f"hf:{hub_id}",
        family="hf",
        kinds=dims,
        weights=hub_id,
        description=description,
        notes="weights from the local Hugging Face cache or --weights DIR (never downloaded)",
        default_kinds=("visual", "aligned"),
        layers=layers,
    )


KNOWN_SPECS = [
    _known("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf",
           {"visual": 1024, "cls": 1024, "aligned": 4096, "last_token": 4096},
           "LLaVA-1.5 7B: CLIP ViT-L/14-336 (layer -2, CLS dropped) + 2-layer MLP projector + Vicuna-7B",
           vision=(24, 1024, True), text=(32, 4096)),
    _known("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf",
           {"visual": 1024, "cls": 1024, "aligned": 5120, "last_token": 5120},
           "LLaVA-1.5 13B: CLIP ViT-L/14-336 (layer -2, CLS dropped) + 2-layer MLP projector + Vicuna-13B",
           vision=(24, 1024, True), text=(40, 5120)),
    _known("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct",
           {"visual": 1280, "aligned": 1536, "last_token": 1536},
           "Qwen2-VL 2B Instruct: 675M ViT + 2x2 PatchMerger + Qwen2-1.5B (fixed square input)",
           vision=(32, 1280, False), text=(28, 1536)),
    _known("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct",
           {"visual": 1280, "aligned": 3584, "last_token": 3584},
           "Qwen2-VL 7B Instruct: 675M ViT + 2x2 PatchMerger + Qwen2-7B (fixed square input)",
           vision=(32, 1280, False), text=(28, 3584)),
    _known("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct",
           {"visual": 1280, "aligned": 3584, "last_token": 3584},
           "Qwen2.5-VL 7B Instruct: window-attention ViT + 2x2 merger + Qwen2.5-7B (fixed square input)",
           vision=(32, 1280, False), text=(28, 3584)),
    _known("internvl3-1b", "OpenGVLab/InternVL3-1B-hf",
           {"visual": 1024, "cls": 1024, "aligned": 896, "last_token": 896},
           "InternVL3 1B: InternViT-300M (448 px tile) + pixel shuffle + MLP + Qwen2.5-0.5B",
           vision=(24, 1024, True), text=(24, 896)),
    _known("llava-next-mistral-7b", "llava-hf/llava-v1.6-mistral-7b-hf",
           {"visual": 1024, "cls": 1024, "aligned": 4096, "last_token": 4096},
           "LLaVA-NeXT (1.6) Mistral 7B: CLIP ViT-L/14-336 any-resolution tiles + MLP + Mistral-7B; "
           "VLM2Vec's LLaVA-NeXT backbone",
           vision=(24, 1024, True), text=(32, 4096)),
    _known("idefics3-8b", "HuggingFaceM4/Idefics3-8B-Llama3",
           {"visual": 1152, "aligned": 4096, "last_token": 4096},
           "Idefics3 8B: SigLIP SO400M tiles + global image, pixel-shuffle connector, Llama-3-8B",
           vision=(27, 1152, False), text=(32, 4096)),
    _known("paligemma-3b-224", "google/paligemma-3b-pt-224",
           {"visual": 1152, "aligned": 2048, "last_token": 2048},
           "PaliGemma 3B (224 px): SigLIP SO400M + linear projector + Gemma-2B (prefix attention)",
           vision=(27, 1152, False), text=(18, 2048)),
    _known("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b",
           {"visual": 1408, "cls": 1408, "aligned": 2560, "last_token": 2560, "qformer": 768},
           "BLIP-2 OPT-2.7B: EVA ViT-g + Q-Former (32 queries) + language projection + OPT-2.7B",
           vision=(39, 1408, True), text=(32, 2560)),
    _known("molmo2-4b", "allenai/Molmo2-4B",
           {"visual": 2304, "aligned": 2560, "last_token": 2560},
           "Molmo2 4B: SigLIP2 SO400M (two layers concatenated) on overlapping crops + the "
           "global view -> 2x2 attention pooling -> MLP + Qwen3-4B",
           vision=(25, 1152, False), text=(36, 2560)),
    _known("molmo2-8b", "allenai/Molmo2-8B",
           {"visual": 2304, "aligned": 4096, "last_token": 4096},
           "Molmo2 8B: SigLIP2 SO400M (two layers concatenated) on overlapping crops + the global "
           "view -> 2x2 attention pooling -> MLP + Qwen3-8B",
           vision=(25, 1152, False), text=(36, 4096)),
    _known("phi4-multimodal", "microsoft/Phi-4-multimodal-instruct",
           {"visual": 1152, "aligned": 3072, "last_token": 3072},
           "Phi-4-multimodal: SigLIP (layer -2) on HD sub-images + the global image -> 2x2 pool -> "
           "MLP + Phi-4-mini (transformers format: the hub's refs/pr/70, as --weights DIR; its "
           "vision LoRA is --adapter DIR/vision-lora)",
           vision=(27, 1152, False), text=(32, 3072)),
    _known("clip-l-hf", "openai/clip-vit-large-patch14",
           {"visual": 1024, "aligned": 768, "patch_mean": 1024, "cls": 1024},
           "CLIP ViT-L/14 through transformers (CLIPModel): pooled class token + visual projection",
           vision=(24, 1024, True), text=None),
    _known("siglip2-so400m-384-hf", "google/siglip2-so400m-patch14-384",
           {"visual": 1152, "aligned": 1152, "patch_mean": 1152},
           "SigLIP2 SO400M/14 at 384 px through transformers (SiglipModel): attention-pool head, no "
           "separate projection",
           vision=(27, 1152, False), text=None),
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
        local = Path(name).expanduser()
        if local.is_dir():  # one id per directory, however it was spelled
            name = str(local.resolve())
        return ExtractorSpec(
            name=f"hf:{name}",
            family="hf",
            kinds=dict.fromkeys(KINDS),
            weights=name,
            description="Hugging Face VLM; dims known after loading",
            default_kinds=("visual", "aligned"),
            layers=_local_layers(local / "config.json") if local.is_dir() else UNKNOWN_LAYERS,
        )

    def load(self, spec, *, weights=None, adapter=None, device="cpu", precision="fp32",
             options: Mapping[str, Any] | None = None
             ) -> HFVLMExtractor | HFTowerExtractor | RemoteCodeVLMExtractor:
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


def _local_layers(config_file: Path) -> dict[str, LayerSpan]:
    """The layer kinds of a local checkpoint, read from its ``config.json`` without
    transformers (unknown depths where the file or its vision tower type is not known)."""
    try:
        config = json.loads(config_file.read_text())
        vision = vision_shape_from_json(config["vision_config"])
        if config["architectures"][0] in TOWER_ARCHITECTURES:  # a dual encoder: vision layers only
            span = LayerSpan(vision.depth, vision.width)
            return {"cls": span, "patch_mean": span} if vision.has_cls else {"patch_mean": span}
        text = config.get("text_config", config)  # Phi-4-multimodal keeps the LM's keys at the top
        text_span = LayerSpan(int(text["num_hidden_layers"]), int(text["hidden_size"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return dict(UNKNOWN_LAYERS)
    if vision is None:
        return {**UNKNOWN_LAYERS, "last_token": text_span}
    layers = {"patch_mean": LayerSpan(vision.depth, vision.width), "last_token": text_span}
    return {"cls": LayerSpan(vision.depth, vision.width), **layers} if vision.has_cls else layers


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or ``{}`` when it is missing or not JSON (transformers then says
    what is wrong with it)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def architectures() -> list[tuple[str, str]]:
    """(description, transformers class) of every architecture ``hf:`` ids load, VLMs first."""
    return ([(a.description, a.model_class) for a in ARCHITECTURES.values()]
            + [(t.description, t.model_class) for t in TOWER_ARCHITECTURES.values()])


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
    """Load an hf ``save_pretrained`` directory (a VLM, a dual encoder or, trusted, a
    remote-code VLM) and an optional peft adapter;
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
    config_json = _read_json(path / "config.json")
    if check_trusted(config_json, spec.name, bool(options.get("trust_remote_code"))):
        model_type = str(config_json.get("model_type"))
        return load_remote_vlm(spec, path, model_type, weights_identity=weights_identity,
                               device=device, precision=precision, options=options,
                               vlm2vec=_vlm2vec_protocol(spec, model_type, path, adapter, options),
                               adapter_dir=adapter)
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(f"cannot read the config of {spec.name} in {path}: {first_line(err)}") from None
    architecture = (config.architectures or [type(config).__name__])[0]
    tower = TOWER_ARCHITECTURES.get(architecture)
    if architecture not in ARCHITECTURES and tower is None:
        raise UnknownNameError(f"{spec.name} is a {architecture}; the hf family supports "
                               f"{supported()}, {', '.join(TOWER_ARCHITECTURES)}")
    arch = ARCHITECTURES.get(architecture)
    if arch is not None and not arch.fixed_size and options.get("image_size") is not None:
        raise FeatkitError(f"option image_size={options['image_size']}: {spec.name} is a "
                           f"{arch.title} ({architecture}), whose image processor fixes its input "
                           f"size (the option is for models with dynamic resolution, e.g. Qwen2-VL)")
    protocol = _vlm2vec_protocol(spec, arch.name if arch else tower.name, path, adapter, options)
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
            loader = transformers.AutoImageProcessor if tower else transformers.AutoProcessor
            processor = loader.from_pretrained(
                path, local_files_only=True, **(protocol.processor_kwargs if protocol else {}))
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
    if tower is not None:
        return HFTowerExtractor(spec, model, processor, architecture=tower,
                                weights_identity=weights_identity, adapter_identity=adapter_identity,
                                device=device, precision=precision,
                                image_size=options.get("image_size"))
    return HFVLMExtractor(
        spec,
        model,
        processor,
        architecture=arch,
        weights_identity=weights_identity,
        adapter_identity=adapter_identity,
        device=device,
        precision=precision,
        instruction=options.get("instruction") or DEFAULT_INSTRUCTION,
        image_size=options.get("image_size"),
        base_model_reference=base_model_reference,
        vlm2vec=protocol,
    )


def _vlm2vec_protocol(spec: ExtractorSpec, architecture: str, path: Path, adapter: str | None,
                      options: Mapping[str, Any]) -> vlm2vec.Vlm2VecProtocol | None:
    """VLM2Vec's protocol for this load (by the option, or the checkpoint's name: the hub id,
    the weights directory or the LoRA repository), checked against the other options."""
    option = options.get("vlm2vec") or vlm2vec.AUTO
    names = [spec.name.partition(":")[2], str(path), adapter]
    protocol = vlm2vec.protocol_for(option, architecture, names, spec.name)
    if protocol is not None and protocol.stretch_to and options.get("image_size") is not None:
        raise FeatkitError(
            f"option image_size={options['image_size']}: {spec.name} is embedded as VLM2Vec "
            f"{protocol.release} does, which stretches every image to {protocol.stretch_to} px; "
            f"pass --option vlm2vec=off to choose the size")
    return protocol
