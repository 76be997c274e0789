"""What each process of a data-parallel run needs to know about the others.

torchrun starts one process per GPU (per CPU slot on a CPU-only node) on every node and sets RANK,
LOCAL_RANK and WORLD_SIZE; the HF Trainer then joins the process group (NCCL on GPUs, gloo on CPUs).
A single process without torchrun is rank 0 of 1.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """The first process of the whole job: the one that uploads and reports."""
    return rank() == 0


def is_local_main() -> bool:
    """The first process of this pod: the one that speaks for the pod (its termination message)."""
    return local_rank() == 0


def _group_ready() -> bool:
    import torch.distributed as dist

    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank."""
    if not _group_ready():
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank: one decision where ranks could otherwise disagree."""
    if not _group_ready():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any) -> list[Any]:
    """`value` from every rank, in rank order (just [value] without a process group)."""
    if not _group_ready():
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def weights_digest(model: Any) -> str:
    """sha256 over the trainable parameters (names and exact bytes): equal digests, equal weights."""
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
