"""Data parallelism over torch.distributed: each rank trains on its slice of every batch.

Gradients are averaged with one all-reduce per SAE, so every rank takes the same step as one process
would on the whole batch (up to the order of floating-point sums). Statistics are summed the same way.
Setting up the process group, ranks and devices is `vitsae/distributed.py`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def local_slice(acts_BD: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's equal share of the rows of a batch."""
    if acts_BD.shape[0] % world_size:
        raise ValueError(
            f"batch of {acts_BD.shape[0]} rows does not split evenly over {world_size} ranks; "
            "choose a batch size divisible by the number of processes"
        )
    share = acts_BD.shape[0] // world_size
    return acts_BD[rank * share : (rank + 1) * share]


def all_reduce_mean_grads(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Average the gradients of `params` over ranks (one flattened all-reduce)."""
    if world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum `tensor` over ranks in place and return it."""
    if world_size > 1:
        dist.all_reduce(tensor)
    return tensor
