"""The image route of an architecture whose image tokens do not come from ``get_image_features``
on images repeated per batch (:data:`~extractors.hf_archs.MOLMO2`,
:data:`~extractors.hf_archs.PHI4_MULTIMODAL`).

An :class:`ImageRoute` answers the few questions :class:`~extractors.hf_vlm.HFVLMExtractor`
asks of the default route: which tower layers ``visual`` reads, the side inputs of a batch of
``B`` images, the model's own image output for a stacked batch, the pooled kinds of that output
and how the language model takes it back. Everything else (prompt, processor, ``last_token``
pooling, padding, layer bookkeeping) is the extractor's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class ImageRoute:
    """Base image route: ``extractor`` is the :class:`~extractors.hf_vlm.HFVLMExtractor` being
    built (its model, base model, tower shape, device and dtype are set; its prompt inputs are
    given later to :meth:`setup`)."""

    #: the tower's ``hidden_states`` indices ``visual`` concatenates, and its token selection
    feature_layer: int | list[int]
    select_strategy: str = "full"

    def __init__(self, extractor: Any) -> None:
        self.extractor = extractor

    @property
    def visual_dim(self) -> int:
        """``visual``'s width: the tower's, once per concatenated layer."""
        layers = self.feature_layer if isinstance(self.feature_layer, list) else [self.feature_layer]
        return self.extractor.tower.width * len(layers)

    def setup(self, prompt_inputs: Mapping[str, Any]) -> None:
        """Read what the route needs from the processor's output for the prompt and one image."""

    def batch_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        """The image side inputs (``Architecture.image_inputs``) of ``batch`` stacked images."""
        inputs = self.extractor._image_inputs
        return {k: v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in inputs.items()}

    def image_output(self, pixel_values: torch.Tensor, hidden: Sequence[int]) -> Any:
        """The model's own image output for a stacked batch, with the tower's ``hidden_states``
        at the indices ``hidden`` (0 = embeddings) kept."""
        raise NotImplementedError

    def pooled(self, output: Any, batch: int, requests: Mapping[str, tuple[str, int]]
               ) -> dict[str, torch.Tensor]:
        """``visual``, ``aligned`` and the requested vision layer kinds (``{kind: (base,
        0-based block)}``) of one :meth:`image_output`."""
        raise NotImplementedError

    def inputs_output(self, kwargs: Mapping[str, Any]) -> Any:
        """The image output of processor ``inputs`` when the language model's hidden-state
        selection must not reach the tower (None: the model's forward keeps them apart)."""
        return None

    def language_inputs(self, kwargs: dict[str, Any], image_output: Any) -> dict[str, Any]:
        """The base model's forward inputs with ``image_output`` given back instead of pixels."""
        if image_output is not None:
            kwargs.pop(self.extractor.arch.pixel_key, None)
            kwargs["mm_encoder_outputs"] = {"image": image_output}
        return kwargs


def mean_over(states: torch.Tensor, batch: int, selected: torch.Tensor | None) -> torch.Tensor:
    """``(B, D)``: the mean over each image's tokens of a tower output ``(B * crops, P, D)``,
    only the tokens of ``selected`` (a boolean mask over one image's ``crops * P`` tokens, or per
    image ``(B, crops * P)``; None: all)."""
    tokens = states.reshape(batch, -1, states.shape[-1])
    if selected is None:
        return tokens.mean(dim=1)
    if selected.dim() == 1:
        return tokens[:, selected].mean(dim=1)
    weights = selected.to(tokens.dtype).expand(batch, -1).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1)
