"""Locating hf checkpoints offline, their identity, and applying peft adapters to them.

A ``save_pretrained`` directory (``--weights DIR`` or a local directory as the id) is identified
by the sha256 of its files; a hub id is looked up in the Hugging Face cache only (featkit never
downloads) and identified by its snapshot commit. A directory holding only an adapter names its
base model, which is resolved the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from featkit.errors import FeatkitError, MissingWeightsError


def resolve_weights(
    source: str,
    weights: str | None,
    adapter: str | None,
    *,
    hash_weights: bool = True,
) -> tuple[Path, str, str | None]:
    """(model directory, weights identity, adapter directory) for ``hf:<source>``, offline.

    ``weights`` (a directory) wins over ``source``; a local directory is hashed (sha256 of all
    files); a hub id is looked up in the Hugging Face cache and identified by its commit. A
    directory with an ``adapter_config.json`` and no model weights is an adapter (whether or not a
    ``config.json`` sits next to it, as in VLM2Vec's LoRA repositories): its base model
    (``base_model_name_or_path``) is resolved the same way and the adapter returned.
    """
    from extractors.weights import weights_identity

    if weights:
        path = Path(weights).expanduser()
        if not path.is_dir():
            raise MissingWeightsError(
                f"--weights {weights}: not a directory; hf models load from a save_pretrained "
                f"directory (config.json, *.safetensors, processor files)"
            )
        identity = weights_identity(path) if hash_weights else "unhashed"
    elif Path(source).expanduser().is_dir():
        path = Path(source).expanduser()
        identity = weights_identity(path) if hash_weights else "unhashed"
    else:
        path, identity = _from_hf_cache(source)
    if is_adapter_repository(path):
        if adapter:
            raise FeatkitError(
                f"{path} is itself a peft adapter and --adapter {adapter} was given too; pass the "
                f"base model as --model/--weights and one adapter"
            )
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise MissingWeightsError(f"{path}/adapter_config.json names no base_model_name_or_path")
        base_path, base_identity, _ = resolve_weights(base, None, None, hash_weights=hash_weights)
        return base_path, base_identity, str(path)
    if not (path / "config.json").is_file():
        raise MissingWeightsError(f"{path} has no config.json; pass a save_pretrained directory")
    return path, identity, adapter


#: file names (globs) of a full checkpoint's weights, next to which adapter_config.json is not an adapter
FULL_WEIGHTS = ("model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json")


def is_adapter_repository(path: Path) -> bool:
    """Whether ``path`` holds a peft adapter rather than a model: an ``adapter_config.json`` and
    no full checkpoint weights (a ``config.json`` beside it does not make it a model)."""
    if not (path / "adapter_config.json").is_file():
        return False
    return not any(any(path.glob(pattern)) for pattern in FULL_WEIGHTS)


def base_model_reference(source: str, weights: str | None) -> str:
    """What an adapter trained on ``hf:<source>`` names as its base: the weights directory, else
    the local directory or hub id of the id (resolved, so the adapter loads from anywhere)."""
    if weights:
        return str(Path(weights).expanduser().resolve())
    local = Path(source).expanduser()
    return str(local.resolve()) if local.is_dir() else source


def _from_hf_cache(repo_id: str) -> tuple[Path, str]:
    from huggingface_hub import constants, snapshot_download

    try:
        snapshot = Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except Exception:  # not cached, partially cached, or not a valid repo id
        raise MissingWeightsError(
            f"weights of hf:{repo_id} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"featkit never downloads: fetch them where there is internet (`hf download {repo_id}`) "
            f"or pass --weights DIR"
        ) from None
    return snapshot, f"hf:{repo_id}@{snapshot.name}"


#: elements of each tensor compared by :func:`parameters_not_as_saved` (the start of its first row)
PROBE_ELEMENTS = 64


def _checkpoint_files(path: Path) -> list[Path]:
    """The weight files of a ``save_pretrained`` directory (single file or index of shards)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            shards = json.loads((path / index).read_text()).get("weight_map", {}).values()
            return [path / name for name in sorted(set(shards))]
    return []


def _saved_starts(file: Path, wanted: dict) -> dict:
    """name -> the start of the saved tensor's first row, for the names in ``wanted`` whose saved
    shape equals the parameter's (read without loading whole tensors)."""
    import torch

    starts = {}
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                param = wanted.get(name)
                if param is None:
                    continue
                piece = handle.get_slice(name)
                shape = tuple(piece.get_shape())
                if shape != tuple(param.shape) or not shape or 0 in shape:
                    continue
                index = (*(slice(0, 1) for _ in shape[:-1]), slice(0, PROBE_ELEMENTS))
                starts[name] = piece[index].reshape(-1)
        return starts
    state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    for name, tensor in state.items():
        param = wanted.get(name)
        if param is not None and tuple(tensor.shape) == tuple(param.shape) and tensor.numel():
            starts[name] = tensor.reshape(-1)[:PROBE_ELEMENTS] if tensor.dim() < 2 else \
                tensor[(*([0] * (tensor.dim() - 1)),)][:PROBE_ELEMENTS]
    return starts


def parameters_not_as_saved(model, path: Path) -> list[str]:
    """The parameters of a loaded ``model`` whose values are not the checkpoint's in ``path``:
    the start of each tensor saved under a parameter's name, cast to its dtype, must equal it.
    A model's own ``_init_weights`` can re-randomise loaded weights (transformers 5 runs it on
    any module holding a buffer the checkpoint lacks; Qwen-VL's code then redraws
    ``c_proj.weight``) without any key reported missing; this is what catches it."""
    import torch

    wanted = {name: p for name, p in model.named_parameters()}
    differing = []
    for file in _checkpoint_files(Path(path)):
        for name, saved in _saved_starts(file, wanted).items():
            param = wanted[name]
            loaded = (param.detach().reshape(-1) if param.dim() < 2 else
                      param.detach()[(*([0] * (param.dim() - 1)),)])[:PROBE_ELEMENTS].cpu()
            if not torch.equal(saved.to(param.dtype), loaded):
                differing.append(name)
    return differing


def merge_adapter(model, adapter: str):
    """Apply a peft adapter directory and merge it into the weights (no LoRA overhead at runtime).

    An adapter whose weights do not all find their modules is refused: peft would only warn and
    leave those LoRA matrices at their initial values.
    """
    import warnings

    from extractors.weights import weights_identity

    adapter_path = Path(adapter).expanduser()
    if not (adapter_path / "adapter_config.json").is_file():
        raise MissingWeightsError(f"--adapter {adapter}: no adapter_config.json there (a peft adapter directory)")
    from peft import PeftModel

    identity = weights_identity(adapter_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=False)
    for warning in caught:
        if "missing adapter keys" in str(warning.message):
            raise MissingWeightsError(
                f"--adapter {adapter}: its weights do not match this model's modules "
                f"({first_line(warning.message)[:200]}...); was it trained on this base model?"
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return peft_model.merge_and_unload(), identity


def first_line(err: BaseException) -> str:
    """The first line of an error message (the one-line errors quote it)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
