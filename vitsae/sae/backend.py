"""The switch between dense matmuls and sparse codes.

`SAEConfig.backend` picks the path; "auto" resolves here, with the dense/sparse threshold measured for
`vitsae.kernels`. `trains_sparse` says which architectures the sparse training step covers; `sparse_decode`
runs the kernels' sparse decode (Triton on CUDA, CSR products on CPU).
"""

from __future__ import annotations

import torch

from vitsae import kernels
from vitsae.kernels.codes import SparseCodes
from vitsae.sae.config import SAEConfig


def resolve_backend(cfg: SAEConfig) -> str:
    """ "dense" or "sparse" for this SAE ("auto": sparse only for TopK codes sparse enough to win)."""
    if cfg.backend != "auto":
        return cfg.backend
    if cfg.architecture != "topk":
        return "dense"
    return kernels.resolve_backend("auto", "topk", cfg.k, cfg.d_sae)


def trains_sparse(cfg: SAEConfig, training: bool, world_size: int) -> bool:
    """Whether a training forward pass runs through the sparse kernels (no B x F gradient).

    TopK and ReLU always can; BatchTopK only in one process in training mode (the kernels select the top
    k * B of the local rows, not the cut-off over every rank's rows); JumpReLU never (its threshold's
    straight-through gradient needs pre-activations just below the threshold, which codes do not hold).
    """
    if resolve_backend(cfg) != "sparse":
        return False
    if cfg.architecture == "batchtopk":
        return training and world_size == 1
    return cfg.architecture in ("topk", "relu")


def sparse_decode(codes: SparseCodes, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """sum_k values_BK[b, k] * W_dec_FD[indices_BK[b, k]] (without b_dec), differentiable in both."""
    return kernels.decode(codes, W_dec_FD, None, backend="sparse")
