"""Features of every layer, in one forward pass: the kinds ``cls@12``, ``patch_mean@-2``,
``last_token@20``.

A layer kind is ``<base>@<layer>``. ``base`` is a per-layer kind the model declares in its
spec's ``layers`` (``cls`` and ``patch_mean`` of the vision tower, ``last_token`` of a VLM's
language model); ``layer`` is the output of one block, counted from 1 (the first block) up to
the tower's depth, or from the end with negative numbers (``-1`` the last block, ``-2`` the one
before): the indexing of Hugging Face's ``hidden_states`` tuple, whose entry 0 (the embeddings,
before any block) is not a layer kind. ``--layers all`` is every block of every tower the model
has layer kinds for.

Each family pools a block's output the way its own kind of that name is pooled, so the layer
kinds continue the model's kinds (the family modules say exactly how):

- timm models and open_clip towers: the block's tokens through the tower's final norm (as
  DINOv2's ``get_intermediate_layers(norm=True)``), then the class token or the mean of the patch
  tokens: ``cls@-1`` *is* ``cls`` and ``patch_mean@-1`` *is* ``patch_mean``;
- Hugging Face VLMs: the vision tower's ``hidden_states[layer]`` as the model's own feature
  selection reads them (no norm), so LLaVA's ``cls`` is ``cls@-2``; the language model's
  ``hidden_states[layer]`` at the last real token, L2-normalised, so ``last_token@-1`` *is*
  ``last_token``.

A layer kind is stored under the name it was asked for; the cache file records each tower's
depth (``layer_depths``), so :func:`featkit.load` asked for ``cls@12`` of a 12-block tower reads
a file that stored it as ``cls@-1`` (and the other way round): :func:`same_block_kinds`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featkit.errors import FeatkitError, UnknownNameError

if TYPE_CHECKING:
    import torch

SEPARATOR = "@"
#: ``--layers all``: every block of every tower
ALL = "all"
#: A layer selection: :data:`ALL` or block numbers (1-based, negative from the end).
LayerSelection = str | tuple[int, ...]


@dataclass(frozen=True)
class LayerSpan:
    """The layers one per-layer kind has: ``depth`` blocks of ``dim``-d features (None: known
    once the model is loaded)."""

    depth: int | None
    dim: int | None

    def describe(self) -> str:
        return f"1..{self.depth}" if self.depth else "1..?"


def layer_kind(base: str, layer: int) -> str:
    """The kind name of ``base`` at block ``layer``: ``layer_kind("cls", 12) == "cls@12"``."""
    return f"{base}{SEPARATOR}{layer}"


def split_kind(kind: str) -> tuple[str, int | None]:
    """``"cls@12"`` -> ``("cls", 12)``; a kind without a layer -> ``(kind, None)``. A layer that
    is not a non-zero integer is a one-line :class:`UnknownNameError`."""
    base, sep, layer = kind.partition(SEPARATOR)
    if not sep:
        return kind, None
    try:
        number = int(layer)
    except ValueError:
        number = 0
    if not base or number == 0:
        raise UnknownNameError(
            f"feature kind {kind!r}: a layer kind is <kind>@<block>, the block a non-zero integer "
            f"(1 = the first block, -1 = the last), e.g. cls@12 or patch_mean@-2"
        )
    return base, number


def parse_layers(text: str | Sequence[int]) -> LayerSelection:
    """``"all"`` or a comma-separated list of block numbers (``"-1,-2,12"``) -> a selection,
    duplicates dropped in order; 0 or a non-integer is a one-line :class:`FeatkitError`."""
    if isinstance(text, str) and text.strip().lower() == ALL:
        return ALL
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    numbers: list[int] = []
    for item in items:
        if item == "":
            continue
        try:
            number = int(item)
        except (TypeError, ValueError):
            number = 0
        if isinstance(item, bool) or number == 0:
            raise FeatkitError(
                f"--layers entry {item!r}: use 'all' or non-zero block numbers, 1 = the first "
                f"block, -1 = the last (e.g. --layers=-1,-2,12)"
            )
        if number not in numbers:
            numbers.append(number)
    if not numbers:
        raise FeatkitError("--layers names no layer; use 'all' or e.g. --layers=-1,-2,12")
    return tuple(numbers)


def block_index(kind: str, layer: int, depth: int) -> int:
    """The 0-based block whose output ``layer`` (1-based, negative from the end) is; a layer
    beyond the tower is a one-line :class:`UnknownNameError`."""
    if not 1 <= abs(layer) <= depth:
        raise UnknownNameError(
            f"feature kind {kind!r}: the tower has {depth} blocks (layers 1..{depth} or "
            f"-1..-{depth})"
        )
    return layer - 1 if layer > 0 else depth + layer


def same_block_kinds(kind: str, depths: Mapping[str, int]) -> list[str]:
    """The names of ``kind``'s block counted the other way (``cls@12`` <-> ``cls@-1`` when
    ``depths["cls"] == 12``); empty for a plain kind, an unknown depth or a layer beyond it."""
    base, layer = split_kind(kind)
    depth = depths.get(base)
    if layer is None or not depth or not 1 <= abs(layer) <= depth:
        return []
    other = layer - depth - 1 if layer > 0 else depth + layer + 1
    return [layer_kind(base, other)]


def expand_layers(layers: Mapping[str, LayerSpan], selection: LayerSelection, *, model: str,
                  bases: Sequence[str] | None = None) -> list[str]:
    """The layer kinds of ``selection`` for each per-layer kind in ``layers`` (or only
    ``bases``): ``all`` is every block of each tower, a list gives each kind those blocks."""
    if not layers:
        raise FeatkitError(f"{model} has no layer kinds (--layers needs a model with per-layer "
                           f"features; see 'featkit list models')")
    chosen = list(bases) if bases is not None else list(layers)
    unknown = [b for b in chosen if b not in layers]
    if unknown:
        raise UnknownNameError(f"{model} has no per-layer kind {', '.join(unknown)} "
                               f"(per-layer kinds: {', '.join(layers)})")
    kinds = []
    for base in chosen:
        span = layers[base]
        if selection == ALL:
            if span.depth is None:
                raise FeatkitError(
                    f"--layers all: the depth of {model}'s {base} tower is known only once it is "
                    f"loaded; list the layers (e.g. --layers=-1,-2,-3)"
                )
            numbers: Sequence[int] = range(1, span.depth + 1)
        else:
            numbers = selection
        for number in numbers:
            kind = layer_kind(base, number)
            if span.depth is not None:
                block_index(kind, number, span.depth)
            kinds.append(kind)
    return kinds


class KindDims(Mapping[str, "int | None"]):
    """A model's feature kinds and their dims (None: known once loaded).

    Iterating (and ``len``, listings, default kinds) gives the named kinds only; lookups (``in``,
    ``[]``, ``get``) also answer the layer kinds ``base@layer`` of the per-layer kinds in
    ``layers``, which are too many to list. Its repr is the plain dict of named kinds.
    """

    def __init__(self, dims: Mapping[str, int | None], layers: Mapping[str, LayerSpan] | None = None
                 ) -> None:
        self._dims = dict(dims)
        self.layers: dict[str, LayerSpan] = dict(layers or {})

    def __getitem__(self, kind: str) -> int | None:
        if kind in self._dims:
            return self._dims[kind]
        span = self._span(kind)
        if span is None:
            raise KeyError(kind)
        return span.dim

    def _span(self, kind: str) -> LayerSpan | None:
        if SEPARATOR not in kind:
            return None
        try:
            base, layer = split_kind(kind)
        except UnknownNameError:
            return None
        span = self.layers.get(base)
        if span is None or (span.depth is not None and not 1 <= abs(layer) <= span.depth):
            return None
        return span

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and (kind in self._dims or self._span(kind) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __repr__(self) -> str:
        return repr(self._dims)

    def describe(self) -> str:
        """``visual, cls; layers cls@1..12, patch_mean@1..12``: how errors name the kinds."""
        text = ", ".join(self._dims)
        if self.layers:
            text += "; layer kinds " + ", ".join(
                f"{base}@{span.describe()}" for base, span in self.layers.items())
        return text


def layer_requests(kinds: Sequence[str], layers: Mapping[str, LayerSpan]
                   ) -> dict[str, tuple[str, int]]:
    """``{kind: (base, 0-based block)}`` for the layer kinds among ``kinds`` (the model's depths
    must be known: a loaded extractor's)."""
    requests = {}
    for kind in kinds:
        base, layer = split_kind(kind)
        if layer is None:
            continue
        span = layers.get(base)
        if span is None or span.depth is None:
            raise UnknownNameError(f"feature kind {kind!r}: this model has no per-layer {base!r}")
        requests[kind] = (base, block_index(kind, layer, span.depth))
    return requests


# -- capturing block outputs --------------------------------------------------------------------


@contextlib.contextmanager
def capture_blocks(blocks: Sequence[torch.nn.Module], indices: Sequence[int]
                   ) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, ``{index: output}`` of ``blocks[index]`` for each index, filled by the
    forward pass that runs inside it (forward hooks, removed on exit): the model's own forward
    runs unchanged and gives every layer at once."""
    captured: dict[int, Any] = {}
    handles = []

    def hook_for(index: int):
        def hook(module, args, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
        return hook

    try:
        for index in sorted(set(indices)):
            handles.append(blocks[index].register_forward_hook(hook_for(index)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class TokenTower:
    """Where a ViT-like tower's per-layer tokens are: its ``blocks``, the ``norm`` its final
    tokens go through, how many prefix tokens (class, registers) lead the sequence, whether the
    first is a class token, and whether blocks see ``(batch, tokens, dim)`` (else tokens first)."""

    blocks: Sequence[Any]
    norm: Any
    num_prefix_tokens: int
    has_cls: bool
    batch_first: bool = True

    def spans(self, width: int) -> dict[str, LayerSpan]:
        """The per-layer kinds this tower gives, ``width``-d each."""
        span = LayerSpan(len(self.blocks), int(width))
        return {"cls": span, "patch_mean": span} if self.has_cls else {"patch_mean": span}

    def pool(self, requests: Mapping[str, tuple[str, int]], captured: Mapping[int, torch.Tensor]
             ) -> dict[str, torch.Tensor]:
        """Each requested layer kind from the captured block outputs: normed, then the class
        token or the patch mean (each block normed once)."""
        normed: dict[int, Any] = {}
        out = {}
        for kind, (base, index) in requests.items():
            if index not in normed:
                tokens = captured[index]
                normed[index] = self.norm(tokens if self.batch_first else tokens.transpose(0, 1))
            tokens = normed[index]
            out[kind] = tokens[:, 0] if base == "cls" else tokens[:, self.num_prefix_tokens:].mean(dim=1)
        return out
