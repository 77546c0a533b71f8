"""Log-likelihoods of multiple-choice options under a generative VLM, given the image and the
question: no answer parsing, and the image + question prefix computed once per question.

:meth:`OptionScorer.score` runs the prefix (vision tower, projector, prompt) once with a KV
cache, repeats the cache for the K options and runs all options in one batched forward over
their own tokens only. An option's score is the sum of its tokens' log-probabilities: the first
token's from the prefix's last position, each next one's from the option's previous position.
Padding may sit on either side of the options (positions follow the attention mask), so left-
and right-padded batches give the same scores. :meth:`OptionScorer.score_naive` is the
reference: one full forward of prefix + option per option.

An option's tokens are those the tokenizer gives the prompt followed by ``" " + option``,
minus the prompt's own tokens (lm-eval's rule), or ``" " + option`` alone where the joint
tokenization merges across the boundary. Prompts use the processor's chat template when it has
one, else ``"<image-token>\\n<text>\\nAnswer:"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from extractors.base import AdaptableExtractor
from extractors.hf import HFVLMExtractor, square_crop
from featkit.errors import FeatkitError

if TYPE_CHECKING:
    import torch
    from PIL import Image

ANSWER_CUE = "Answer:"
#: architectures whose shared-prefix scores are tested equal to one forward per option
#: (PaliGemma's prefix attention and BLIP-2's processor-placed image tokens are not handled)
SUPPORTED = ("llava", "llava_next", "llava_onevision", "internvl", "idefics3", "qwen2_vl",
             "qwen2_5_vl", "qwen3_vl")


@dataclass(frozen=True)
class OptionScores:
    """Per option: the summed log-probability of its tokens and how many tokens it has."""

    logprob: np.ndarray
    n_tokens: np.ndarray

    def scores(self, length_norm: str = "none") -> np.ndarray:
        """``"none"``: the summed log-likelihood; ``"token"``: the mean per token."""
        if length_norm == "token":
            return self.logprob / np.maximum(self.n_tokens, 1)
        return self.logprob


class OptionScorer:
    """Scores the options of questions about images with a loaded generative VLM."""

    def __init__(self, extractor: AdaptableExtractor) -> None:
        if not isinstance(extractor, HFVLMExtractor):
            raise FeatkitError(f"{extractor.spec.name} is not a generative VLM; option "
                               f"log-likelihoods need an hf VLM (LLaVA, Qwen2-VL, ...)")
        arch = extractor.arch
        if arch.name not in SUPPORTED:
            raise FeatkitError(
                f"option log-likelihoods of {arch.title} models ({extractor.spec.name}) are not "
                f"supported (checked against the one-forward-per-option loop: "
                f"{', '.join(SUPPORTED)}); score it with --method similarity")
        self.extractor = extractor
        self.model = extractor.model
        self.processor = extractor.processor
        self.tokenizer = extractor.processor.tokenizer
        self.device = extractor.device
        self.mrope = extractor.arch.mrope  # Qwen2-VL, 2.5-VL, 3-VL: multimodal RoPE positions
        parameters = inspect.signature(self.model.forward).parameters
        # transformers 5 renamed past_key_values to cache (5.2x accepts both, warning on the old)
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # -- prompts and tokens --

    def prompt(self, text: str) -> str:
        """The model's prompt for a question ``text`` (image placeholder included)."""
        if self.processor.chat_template:
            message = [{"role": "user", "content": [{"type": "image"},
                                                    {"type": "text", "text": text}]}]
            return self.processor.apply_chat_template(message, add_generation_prompt=True,
                                                      tokenize=False)
        return f"{self.extractor.image_token}\n{text}\n{ANSWER_CUE}"

    def option_ids(self, prompt: str, options: Sequence[str]) -> list[list[int]]:
        """The tokens of each option as the answer after ``prompt`` (one tokenizer call for
        all options)."""
        context = self.tokenizer(prompt)["input_ids"]
        wholes = self.tokenizer([f"{prompt} {option}" for option in options])["input_ids"]
        out = []
        for option, whole in zip(options, wholes):
            if whole[:len(context)] == context and len(whole) > len(context):
                out.append(list(whole[len(context):]))
                continue
            ids = self.tokenizer(f" {option}", add_special_tokens=False)["input_ids"]
            if not ids:
                raise FeatkitError(f"option {option!r} has no tokens")
            out.append(list(ids))
        return out

    def prefix_inputs(self, image: Image.Image, prompt: str):
        """The processor's tensors for one image and its prompt (on the model's device)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.extractor.square_crop_size:
            image = square_crop(image, self.extractor.square_crop_size)
        inputs = self.processor(text=[prompt], images=[image], return_tensors="pt")
        out = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.extractor.dtype)
        return out

    # -- scoring --

    def score(self, image: Image.Image, text: str, options: Sequence[str], *,
              padding_side: str = "right") -> OptionScores:
        """Every option's log-likelihood after the image and question, the prefix run once."""
        return self.score_batch([(image, text, options)], padding_side=padding_side)[0]

    def score_batch(self, questions: Sequence[tuple[Image.Image, str, Sequence[str]]], *,
                    padding_side: str = "right") -> list[OptionScores]:
        """:meth:`score` of several questions, their prefixes in one (left-padded) forward and
        all their options in another.

        Each prefix's KV cache is repeated for its options, which run through the base model
        on it; the LM head is applied only where a next option token is predicted."""
        import torch

        prompts = [self.prompt(text) for _, text, _ in questions]
        prefix = _stack_left([self.prefix_inputs(image, prompt)
                              for (image, _, _), prompt in zip(questions, prompts)], self.pad_id)
        if prefix is None:  # images of different tile grids: one question at a time
            return [result for q in questions for result in self.score_batch([q],
                                                                            padding_side=padding_side)]
        ids = [self.option_ids(prompt, options) for prompt, (_, _, options) in
               zip(prompts, questions)]
        owner = torch.tensor([q for q, rows in enumerate(ids) for _ in rows], device=self.device)
        flat = [row for rows in ids for row in rows]
        with torch.inference_mode():
            if not self.mrope:  # left padding: positions count real tokens only
                prefix["position_ids"] = (prefix["attention_mask"].long().cumsum(1) - 1).clamp(min=0)
            out = self.model(**prefix, use_cache=True, logits_to_keep=1)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            cache.batch_select_indices(owner)
            tokens, mask = _pad(flat, self.pad_id, padding_side, self.device)
            positions = (self._next_positions(prefix)[owner] + mask.long().cumsum(dim=1) - 1
                         ).clamp(min=0)
            if self.mrope:
                positions = positions.unsqueeze(0).expand(3, -1, -1)
            full_mask = torch.cat([prefix["attention_mask"][owner], mask.long()], dim=1)
            hidden = self.extractor.base(input_ids=tokens, attention_mask=full_mask,
                                         position_ids=positions, use_cache=True,
                                         **{self._cache_argument: cache}).last_hidden_state
            logprob = _option_logprobs(out.logits[owner, -1], hidden, tokens, mask,
                                       self.model.get_output_embeddings())
        results, start = [], 0
        for rows in ids:
            results.append(OptionScores(logprob[start:start + len(rows)],
                                        np.array([len(r) for r in rows])))
            start += len(rows)
        return results

    def _next_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The position of the first token after each prefix (M-RoPE's text position for
        Qwen2-VL, whose image tokens use fewer positions than they have tokens)."""
        import torch

        if not self.mrope:
            return inputs["attention_mask"].long().sum(dim=1, keepdim=True)
        rope, _ = self.model.model.get_rope_index(
            inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
        return rope.amax(dim=(0, 2)).view(-1, 1).to(torch.long) + 1

    def score_naive(self, image: Image.Image, text: str, options: Sequence[str]) -> OptionScores:
        """The reference: one full forward of image + question + option per option."""
        import torch

        prompt = self.prompt(text)
        inputs = self.prefix_inputs(image, prompt)
        logprobs, counts = [], []
        with torch.inference_mode():
            for option_ids in self.option_ids(prompt, options):
                ids = torch.tensor([option_ids], device=self.device)
                full = dict(inputs)
                full["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
                full["attention_mask"] = torch.ones_like(full["input_ids"])
                if "mm_token_type_ids" in inputs:
                    full["mm_token_type_ids"] = torch.cat(
                        [inputs["mm_token_type_ids"], torch.zeros_like(ids)], dim=1)
                logits = self.model(**full, use_cache=False,
                                    logits_to_keep=ids.shape[1] + 1).logits[0, :-1].float()
                picked = torch.log_softmax(logits, dim=-1).gather(1, ids[0, :, None])
                logprobs.append(float(picked.double().sum()))
                counts.append(ids.shape[1])
        return OptionScores(np.array(logprobs), np.array(counts))


#: processor outputs that run along the tokens (left-padded with this value when stacked)
_TOKEN_INPUTS = {"attention_mask": 0, "mm_token_type_ids": 0}


def _stack_left(inputs: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any] | None:
    """One question's processor tensors, or several stacked: token rows left-padded (so every
    prefix ends in the last column), image tensors concatenated (Qwen's patches, tiles, image
    sizes); None when the images' tensors differ in shape (any-resolution tiles)."""
    import torch

    if len(inputs) == 1:
        return dict(inputs[0])
    width = max(x["input_ids"].shape[1] for x in inputs)
    out: dict[str, Any] = {}
    for key in inputs[0]:
        parts = [x[key] for x in inputs]
        if key == "input_ids" or key in _TOKEN_INPUTS:
            fill = pad_id if key == "input_ids" else _TOKEN_INPUTS[key]
            out[key] = torch.cat([torch.nn.functional.pad(x, (width - x.shape[1], 0), value=fill)
                                  for x in parts])
        elif len({tuple(x.shape[1:]) for x in parts}) > 1:
            return None
        else:
            out[key] = torch.cat(parts)
    return out


def _pad(ids: Sequence[Sequence[int]], pad_id: int, side: str, device: str):
    """Token rows padded to one length on ``side``, and their mask."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, got {side!r}")
    width = max(len(row) for row in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, row in enumerate(ids):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        tokens[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = True
    return tokens.to(device), mask.to(device)


def _option_logprobs(prefix_logits: torch.Tensor, hidden: torch.Tensor, tokens: torch.Tensor,
                     mask: torch.Tensor, head: torch.nn.Module) -> np.ndarray:
    """Summed log-probabilities of each row's real tokens: the first one predicted by its
    prefix's last position (``prefix_logits``, one row per option), each next one by the LM
    ``head`` at the row's previous real token (``hidden``: the option tokens' base states)."""
    import torch

    rows = mask.nonzero()[:, 0]  # real tokens in row-major order, so a row's previous real
    targets = tokens[mask]  # token is the previous entry unless it starts the row
    starts = torch.ones_like(rows, dtype=torch.bool)
    starts[1:] = rows[1:] != rows[:-1]
    first = torch.log_softmax(prefix_logits.float(), dim=-1)[rows[starts], targets[starts]]
    following = (~starts).nonzero()[:, 0]
    logits = head(hidden[mask][following - 1]).float()
    picked = logits.gather(1, targets[following, None]).squeeze(1) - torch.logsumexp(logits, -1)
    total = torch.zeros(len(tokens), dtype=torch.float64, device=tokens.device)
    total.index_add_(0, rows[starts], first.double())
    total.index_add_(0, rows[following], picked.double())
    return total.cpu().numpy()
