"""GradCache (Gao et al. 2021): the gradient of a batch-level loss with one chunk's activations
in memory at a time.

A contrastive loss couples every pair of the batch, so the batch cannot simply be split into
accumulated micro-batches. GradCache instead:

1. embeds the batch chunk by chunk without an autograd graph, recording the RNG state before each
   chunk (so dropout draws the same masks when the chunk is replayed);
2. computes the loss on the whole batch of detached embeddings and backpropagates it to those
   embeddings only (cheap: ``B x D``), caching ``dL/d(embedding)``;
3. replays each chunk with a graph and the recorded RNG state, and backpropagates
   ``sum(embedding * cached gradient)``, whose parameter gradient is exactly the chunk's share of
   ``dL/d(params)``; the chunks' shares accumulate in ``.grad``.

Peak activation memory is that of one chunk; the price is a second forward pass. Under DDP every
replay but the last runs inside ``no_sync()``, so gradients are all-reduced once per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

Encode = Callable[[Any], Sequence[torch.Tensor]]


def rng_state(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU generator's state and, for a CUDA ``device``, that device's."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device | str | None = None) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, torch.device(device))


def cached_backward(
    encode: Encode,
    chunks: Sequence[Any],
    loss_fn: Callable[..., Any],
    *,
    replay_encode: Encode | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    device: torch.device | str | None = None,
) -> Any:
    """Accumulate ``d loss_fn(*embeddings)/d(params)`` into ``.grad``, one chunk at a time.

    ``encode(chunk)`` returns a tuple of ``(n_chunk, D)`` embeddings (e.g. query and target);
    ``loss_fn`` receives each of them concatenated over the chunks and returns the loss tensor or a
    dataclass with a ``loss`` field; that value is returned with the loss detached. ``replay_encode`` (default ``encode``) is what runs with a graph in pass 3 -- a DDP
    wrapper's forward, say -- and ``no_sync`` its gradient-sync suppressor for all but the last
    chunk.
    """
    if not chunks:
        raise ValueError("no chunks to embed")
    replay_encode = replay_encode or encode
    states, cached = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(rng_state(device))
            cached.append([e.detach() for e in encode(chunk)])
    after = rng_state(device)
    sizes = [len(c[0]) for c in cached]
    leaves = [torch.cat([c[k] for c in cached]).requires_grad_(True) for k in range(len(cached[0]))]
    result = loss_fn(*leaves)
    loss = getattr(result, "loss", result)
    loss.backward()
    grads = [leaf.grad.split(sizes) for leaf in leaves]
    for index, chunk in enumerate(chunks):
        set_rng_state(states[index], device)
        last = index == len(chunks) - 1
        with contextlib.nullcontext() if (last or no_sync is None) else no_sync():
            embeddings = replay_encode(chunk)
            surrogate = sum((e * g[index].to(e.dtype)).sum() for e, g in zip(embeddings, grads))
            surrogate.backward()
    set_rng_state(after, device)
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, loss=loss.detach())
    return loss.detach()
