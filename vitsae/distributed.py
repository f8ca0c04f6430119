"""Process-group set-up shared by every stage that runs under torchrun (harvest, train).

`init_if_torchrun` starts the group when torchrun launched more than one process; `rank_world` and
`barrier` work whether or not a group exists (one process: rank 0 of 1, no wait); `local_device` turns a
device name into this process's device. The collective maths of training (gradient and statistic
reductions) stays in `train/distributed.py`.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init_if_torchrun(backend: str | None = None, timeout: datetime.timedelta | None = None) -> bool:
    """Start the process group when `WORLD_SIZE` > 1 and none is running; True if this call started it
    (the caller then destroys it). `backend` None: NCCL when CUDA is present, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if timeout is None:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, timeout=timeout)
    return True


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when no process group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if rank_world()[1] > 1:
        dist.barrier()


def local_device(name: str) -> torch.device:
    """The device `name` means for this process: "auto" is CUDA when present, else the CPU; "cuda" under
    torchrun is this rank's own GPU (`cuda:<LOCAL_RANK>`); anything else is used as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        rank, world = rank_world()
        local = os.environ.get("LOCAL_RANK", str(rank) if world > 1 else None)
        if local is not None:
            return torch.device("cuda", int(local) % max(torch.cuda.device_count(), 1))
    return torch.device(name)
