"""The training-only parts of the SAE activations: JumpReLU's straight-through estimators and BatchTopK's
batch-wide selection (with the smallest kept value for its inference threshold, and across ranks).

ReLU and TopK, and the inference forms, are defined once in `vitsae.kernels.reference.activate`.

JumpReLU (Rajamanoharan et al. 2024): f(z) = z * H(z - theta). The step H has zero gradient almost
everywhere, so the threshold learns through a pseudo-derivative: d H(z - theta) / d theta is replaced by
-K((z - theta) / eps) / eps with the rectangle kernel K(u) = 1[|u| <= 1/2] and bandwidth eps.
"""

from __future__ import annotations

import torch


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_BF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_BF * (pre_BF > threshold_F)

    @staticmethod
    def backward(ctx, grad_BF: torch.Tensor):
        pre_BF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_BF * (pre_BF > threshold_F)
        pseudo_BF = -(threshold_F / eps) * _rectangle((pre_BF - threshold_F) / eps)
        grad_threshold = (grad_BF * pseudo_BF).sum_to_size(threshold_F.shape)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_BF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return (pre_BF > threshold_F).to(pre_BF.dtype)

    @staticmethod
    def backward(ctx, grad_BF: torch.Tensor):
        pre_BF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        pseudo_BF = -(1.0 / eps) * _rectangle((pre_BF - threshold_F) / eps)
        grad_threshold = (grad_BF * pseudo_BF).sum_to_size(threshold_F.shape)
        return torch.zeros_like(pre_BF), grad_threshold, None


def jumprelu(pre_BF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """z * H(z - theta), with the straight-through gradient for theta."""
    return _JumpReLU.apply(pre_BF, threshold_F, bandwidth)


def step(pre_BF: torch.Tensor, threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """H(z - theta) as a float mask; its straight-through gradient reaches only theta (for the L0 penalty)."""
    return _Step.apply(pre_BF, threshold_F, bandwidth)


def batch_topk_relu(pre_BF: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k * B largest ReLU'd pre-activations of the whole batch: (dense codes_BF, the smallest kept).

    The smallest kept positive value feeds the running inference threshold.
    """
    acts_BF = pre_BF.relu()
    flat = acts_BF.flatten()
    n_keep = min(k * pre_BF.shape[0], flat.numel())
    values, indices = flat.topk(n_keep, sorted=False)
    codes_BF = torch.zeros_like(flat).scatter(0, indices, values).view_as(acts_BF)
    positive = values[values > 0]
    smallest = positive.min().detach() if positive.numel() else pre_BF.new_zeros(())
    return codes_BF, smallest


def batch_topk_relu_distributed(
    pre_BF: torch.Tensor, k: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_topk_relu` over the union of every rank's rows (each rank holds B rows of the k * B * ranks).

    The global cut-off is found from each rank's top candidates (the global top-N lies in the union of
    the local top-N sets), so every rank keeps what one process would keep on the whole batch.
    """
    import torch.distributed as dist

    acts_BF = pre_BF.relu()
    flat = acts_BF.flatten()
    n_keep = min(k * pre_BF.shape[0] * world_size, flat.numel() * world_size)
    candidates = flat.detach().topk(min(n_keep, flat.numel()), sorted=False).values
    gathered = [torch.empty_like(candidates) for _ in range(world_size)]
    dist.all_gather(gathered, candidates)
    cutoff = torch.cat(gathered).topk(n_keep, sorted=False).values.min()
    keep_BF = (acts_BF >= cutoff) & (acts_BF > 0)
    codes_BF = acts_BF * keep_BF
    local_min = torch.where(keep_BF, acts_BF.detach(), torch.full_like(acts_BF, torch.inf)).min()
    dist.all_reduce(local_min, op=dist.ReduceOp.MIN)
    smallest = local_min if torch.isfinite(local_min) else pre_BF.new_zeros(())
    return codes_BF, smallest
