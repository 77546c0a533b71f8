"""InfoNCE over L2-normalised embeddings with in-batch negatives, on one process or across ranks.

Query ``i`` of the batch should score its own target ``i`` above every other target in the batch:
``loss = mean_i CE(q_i . T^T / tau, i)`` (VLM2Vec / seed 001: one direction, query -> target,
``tau = 0.02``). ``symmetric=True`` averages it with the target -> query direction.

Duplicate targets: when two pairs share the same target text (class-name captions do, within a
batch), the other copy is not a negative -- its logit equals the positive's, so the loss could not
fall below ``log(k)`` for ``k`` copies. Given ``target_ids`` (equal ids = equal target text),
such logits are masked out of the softmax; without ids every other target is a negative.

Across ranks (``torch.distributed`` initialised, ``distributed=True``) the embeddings are
all-gathered with :func:`all_gather_with_grad`, so the negatives span the global batch; each rank
computes the loss of its own queries (their positives sit at ``rank * B + i``) and the gather's
backward sums the gradients every rank sends to each embedding. With DDP averaging the parameter
gradients over ``W`` ranks, the update equals that of one process holding the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from featkit.adapt.config import DEFAULT_TEMPERATURE


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's equally sized tensor; backward returns this rank's slice of the
    gradient summed over all ranks (each rank's loss may use every rank's embeddings)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``cat`` of every rank's ``tensor`` (same shape on every rank), differentiable."""
    return _AllGatherWithGrad.apply(tensor)


def all_gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Every rank's integer ids concatenated (no gradient)."""
    import torch.distributed as dist

    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


@dataclass(frozen=True)
class LossOutput:
    """The loss (a differentiable scalar) and the in-batch top-1 retrieval accuracy of the
    query -> target direction (a float, masked duplicates excluded from the ranking)."""

    loss: torch.Tensor
    accuracy: float


def _direction(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    same: torch.Tensor | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = anchors @ candidates.T / temperature
    if same is not None:
        not_positive = torch.ones_like(same)
        not_positive[torch.arange(len(positives), device=same.device), positives] = False
        logits = logits.masked_fill(same & not_positive, float("-inf"))
    return F.cross_entropy(logits, positives), logits


def info_nce(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    symmetric: bool = False,
    target_ids: torch.Tensor | None = None,
    distributed: bool = False,
) -> LossOutput:
    """InfoNCE of ``(B, D)`` query and target embeddings (pair ``i`` = row ``i`` of each).

    Embeddings are L2-normalised here (a no-op for last-token embeddings, which already are), so
    logits are cosine similarities over ``temperature``. ``target_ids`` (``(B,)`` ints) marks
    duplicate targets, masked from each other's negatives. ``distributed`` gathers embeddings and
    ids from every rank of the initialised process group (equal ``B`` on every rank).
    """
    if query.shape != target.shape or query.dim() != 2:
        raise ValueError(f"query {tuple(query.shape)} and target {tuple(target.shape)} must be equal (B, D)")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    dtype = torch.promote_types(query.dtype, torch.float32)  # bf16 in, fp32 loss; fp64 stays fp64
    query = F.normalize(query.to(dtype), dim=-1)
    target = F.normalize(target.to(dtype), dim=-1)
    offset = 0
    all_query, all_target, all_ids = query, target, target_ids
    if distributed:
        import torch.distributed as dist

        offset = dist.get_rank() * query.shape[0]
        all_target = all_gather_with_grad(target)
        if symmetric:
            all_query = all_gather_with_grad(query)
        if target_ids is not None:
            all_ids = all_gather_ids(target_ids.to(query.device))
    positives = torch.arange(query.shape[0], device=query.device) + offset
    same = None
    if target_ids is not None:
        same = target_ids.to(query.device)[:, None] == all_ids.to(query.device)[None, :]
    loss, logits = _direction(query, all_target, positives, same, temperature)
    accuracy = (logits.argmax(dim=1) == positives).float().mean().item()
    if symmetric:
        reverse, _ = _direction(target, all_query, positives, same, temperature)
        loss = (loss + reverse) / 2
    return LossOutput(loss, accuracy)
