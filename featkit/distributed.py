"""Extraction across processes launched by ``torchrun``: rank discovery, shard claims, barriers.

Ranks share the cache directory (a shared file system across nodes). Each rank claims the next
missing shard by creating ``shard-N.claim`` exclusively, so a slow rank simply claims fewer shards;
rank 0 assembles the final file once every shard is present. Claims are only meaningful within
one run: rank 0 clears them at the start, so a rerun (with any world size) redoes only the shards
that are missing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def init(device: str) -> DistContext | None:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); None when not launched
    by torchrun or when the world has one process."""
    if not launched_by_torchrun():
        return None
    import torch.distributed as dist

    world = int(os.environ["WORLD_SIZE"])
    if world <= 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        atexit.register(_end_group)
    return DistContext(dist.get_rank(), dist.get_world_size())


def _end_group() -> None:
    """At interpreter exit: end the process group featkit began, while Python is still up.

    Left to C++ static destruction, gloo's teardown can abort a rank that has finished its work
    ("terminate called without an active exception", SIGABRT) and fail the whole torchrun job.
    Ending the group per call instead would break a second ``extract`` in the same job: a group
    re-created under torchrun may read the old group's addresses from the store.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: str) -> str:
    """Under torchrun, ``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``)."""
    if device == "cuda" and launched_by_torchrun():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None:
        import torch.distributed as dist

        dist.barrier()


def broadcast(ctx: DistContext | None, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if ctx is None:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_lists(ctx: DistContext | None, items: list) -> list:
    """The concatenation of every rank's ``items``, on every rank."""
    if ctx is None:
        return items
    import torch.distributed as dist

    boxes: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(boxes, items)
    return [item for box in boxes for item in box]


def claim_path(parts: Path, index: int) -> Path:
    return parts / f"shard-{index:06d}.claim"


def try_claim(parts: Path, index: int, rank: int) -> bool:
    """Atomically claim a shard (O_EXCL create); False if another rank has it."""
    try:
        fd = os.open(claim_path(parts, index), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(str(rank))
    return True


def clear_claims(parts: Path) -> None:
    for claim in parts.glob("shard-*.claim"):
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()
