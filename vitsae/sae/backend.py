"""The switch between dense matmuls and sparse codes, and the plain-PyTorch sparse paths.

`SAEConfig.backend` picks the path; "auto" resolves here, with the dense/sparse threshold measured for
`vitsae.kernels`. `sparse_decode` runs the kernels' sparse decode (Triton on CUDA, CSR products on CPU).
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


def topk_encode_sparse(pre_BF: torch.Tensor, k: int) -> SparseCodes:
    """Each row's k largest pre-activations, ReLU'd, as sparse codes (values keep their autograd graph)."""
    values_BK, indices_BK = pre_BF.topk(k, dim=-1, sorted=False)
    values_BK = values_BK.relu()
    active_BK = values_BK > 0
    indices_BK = torch.where(active_BK, indices_BK, torch.zeros_like(indices_BK))
    counts_B = active_BK.sum(-1, dtype=torch.int32)
    return SparseCodes(indices_BK.to(torch.int32), values_BK, counts_B)


def sparse_decode(codes: SparseCodes, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """sum_k values_BK[b, k] * W_dec_FD[indices_BK[b, k]] (without b_dec), differentiable in both."""
    return kernels.decode(codes, W_dec_FD, None, backend="sparse")
