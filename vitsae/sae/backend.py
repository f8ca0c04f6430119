"""The switch between dense matmuls and sparse codes, and the plain-PyTorch sparse paths.

`SAEConfig.backend` picks the path; "auto" resolves here. The fused kernels in `vitsae.kernels` plug in
behind `topk_encode_sparse` and `sparse_decode`, which keep these signatures and autograd behaviour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitsae.kernels.codes import SparseCodes
from vitsae.sae.config import SAEConfig

# TopK codes at most this dense (k / F) decode faster as a gather than as a dense matmul.
SPARSE_DENSITY_LIMIT = 1 / 8


def resolve_backend(cfg: SAEConfig) -> str:
    """ "dense" or "sparse" for this SAE ("auto": sparse only for TopK codes sparse enough to win)."""
    if cfg.backend != "auto":
        return cfg.backend
    sparse_enough = cfg.k <= SPARSE_DENSITY_LIMIT * cfg.d_sae
    return "sparse" if cfg.architecture == "topk" and sparse_enough else "dense"


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
    return F.embedding_bag(
        codes.indices_BK, W_dec_FD, per_sample_weights=codes.values_BK.to(W_dec_FD.dtype), mode="sum"
    )
