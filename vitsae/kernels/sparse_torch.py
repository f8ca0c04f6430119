"""Sparse PyTorch backend (CPU, or any device without Triton): CSR products instead of B x F matmuls.

The encoder's x W_enc matmul stays dense (nothing cheaper exists on a CPU); the selection packs the
active features into `SparseCodes` slots and every later product (decode, and the backward's
grad W_dec, grad W_enc = x^T d_pre, grad x = d_pre W_enc^T) touches only the active entries.
Codes denser than `DENSE_DENSITY_THRESHOLD` (nonzeros / (B * F)) run as dense matmuls instead, because
there the dense BLAS beats the sparse products; the threshold is measured by scripts/bench_kernels.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from vitsae.kernels import selection
from vitsae.kernels.codes import used_slots
from vitsae.kernels.reference import check_activation

# The measured dense/sparse crossover of a TopK training step on the 2-core CPU sandbox: K/F = 0.108 in
# the scripts/bench_kernels.py density sweep on the idle machine (run C, 2026-11-23; docs/benchmarks.md,
# "Kernels"), rounded down. Runs under heavy load had put it at 0.044-0.075.
DENSE_DENSITY_THRESHOLD = 0.1


def encode_select(
    x_BD: torch.Tensor,
    W_enc_DF: torch.Tensor,
    b_enc_F: torch.Tensor,
    b_dec_D: torch.Tensor,
    activation: str,
    k: int | None,
    threshold_F: torch.Tensor | None,
    l1_weights_F: torch.Tensor | None,
    precision: str = "float32",
) -> tuple[torch.Tensor, ...]:
    """Encode and pack: (indices_BK int32, values_BK, counts_B int32, l1_B or None, fire_counts_F int64).

    The pre-activations use b_dec folded into the bias, x W_enc - (b_dec W_enc - b_enc); every active
    feature is kept (K is the widest row's count), so nothing overflows. `precision` "bfloat16" or
    "float16" rounds both matmul operands to that type and accumulates in the weights' dtype (what the
    GPU kernel computes, up to summation order); "tf32" runs as "float32" here (TF32 is a GPU format).
    """
    check_activation(activation, k, threshold_F)
    F = W_enc_DF.shape[1]
    folded_bias_F = b_enc_F - b_dec_D @ W_enc_DF
    x_BD, W_mm_DF = round_operands(x_BD.to(W_enc_DF.dtype), W_enc_DF, precision)
    pre_BF = torch.addmm(folded_bias_F, x_BD, W_mm_DF)
    if activation == "topk":
        top_BK, idx_BK = torch.topk(pre_BF, min(k, F), dim=1)
        indices_BK, values_BK, counts_B = selection.pack_topk(top_BK, idx_BK)
    else:
        indices_BK, values_BK, counts_B = pack_active_codes(pre_BF, activation, k, threshold_F)
    del pre_BF
    return indices_BK, values_BK, counts_B, *code_statistics(indices_BK, values_BK, counts_B, l1_weights_F, F)


def pack_active_codes(
    pre_BF: Tensor, activation: str, k: int, threshold_F: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(indices, values, counts) of every feature active in the B x F pre-activations: those above 0
    ("relu"), above their threshold ("jumprelu"), or the batch's top k * B (any other name: "batchtopk")."""
    if activation == "relu":
        active_BF = pre_BF > 0
    elif activation == "jumprelu":
        active_BF = pre_BF > threshold_F
    else:
        active_BF = selection.batch_topk_mask(pre_BF, k)
    return selection.pack_active(pre_BF, active_BF)


def round_operands(x_BD: Tensor, W_DF: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """x and W rounded to the half type `precision` names, kept in their dtype (unchanged otherwise)."""
    half = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    if half is None:
        return x_BD, W_DF
    return x_BD.to(half).to(x_BD.dtype), W_DF.to(half).to(W_DF.dtype)


def code_statistics(
    indices_BK: Tensor, values_BK: Tensor, counts_B: Tensor, l1_weights_F: Tensor | None, n_features: int
) -> tuple[Tensor | None, Tensor]:
    """(l1_B = sum_k |v| w[idx], or None without weights; fire_counts_F) of packed codes. No device sync:
    the counts are an integer scatter-add of the used-slot mask (exact, so deterministic)."""
    used_E = used_slots(counts_B, indices_BK.shape[1]).reshape(-1).long()
    fire_F = used_E.new_zeros(n_features).index_add_(0, indices_BK.reshape(-1).long(), used_E)
    if l1_weights_F is None:
        return None, fire_F
    return (values_BK.abs() * l1_weights_F[indices_BK.long()]).sum(dim=1), fire_F


def _entries(indices_BK, coef_BK, counts_B):
    """The used slots in row-major order: (rows_E, features_E int64, coef_E or None)."""
    B, K = indices_BK.shape
    if B and int(counts_B.min()) == K:  # every slot used (TopK): no masking needed
        rows_E = torch.arange(B, device=indices_BK.device).repeat_interleave(K)
        coef_E = None if coef_BK is None else coef_BK.reshape(-1)
        return rows_E, indices_BK.reshape(-1).long(), coef_E
    used_BK = used_slots(counts_B, K)
    rows_E = torch.nonzero(used_BK)[:, 0]
    return rows_E, indices_BK[used_BK].long(), None if coef_BK is None else coef_BK[used_BK]


def _csr(indices_BK: torch.Tensor, coef_BK: torch.Tensor, counts_B: torch.Tensor, n_features: int):
    """The B x F CSR matrix of the used slots (unused slots dropped, so no duplicate columns)."""
    _, feature_E, coef_E = _entries(indices_BK, coef_BK, counts_B)
    crow = torch.zeros(counts_B.shape[0] + 1, dtype=torch.int64, device=counts_B.device)
    torch.cumsum(counts_B, 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            feature_E,
            coef_E,
            (counts_B.shape[0], n_features),
            check_invariants=False,
        )


def _csr_transposed(indices_BK, coef_BK, counts_B, n_features: int):
    """The F x B CSR matrix of the used slots: entries sorted by feature (stable, so deterministic)."""
    row_E, feature_E, coef_E = _entries(indices_BK, coef_BK, counts_B)
    order_E = stable_argsort(feature_E)
    crow = torch.zeros(n_features + 1, dtype=torch.int64, device=indices_BK.device)
    torch.cumsum(torch.bincount(feature_E, minlength=n_features), 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            row_E[order_E],
            coef_E[order_E],
            (n_features, counts_B.shape[0]),
            check_invariants=False,
        )


def stable_argsort(keys_E: torch.Tensor) -> torch.Tensor:
    """Stable argsort; on CPU through NumPy's radix sort, since torch's parallel CPU sort slows down
    several hundred-fold when its threads compete with other processes (0.8 s against 2 ms for 32k
    keys on the 2-core sandbox)."""
    if keys_E.device.type == "cpu":
        return torch.from_numpy(np.argsort(keys_E.numpy(), kind="stable"))
    return torch.argsort(keys_E, stable=True)


def _is_dense(counts_B: torch.Tensor, n_features: int) -> bool:
    nnz = int(counts_B.sum())
    return nnz > DENSE_DENSITY_THRESHOLD * counts_B.shape[0] * n_features


def dense_codes(indices_BK, coef_BK, counts_B, n_features: int) -> torch.Tensor:
    """The B x F matrix of the used slots' coefficients."""
    used_BK = used_slots(counts_B, indices_BK.shape[1])
    dense_BF = coef_BK.new_zeros(counts_B.shape[0], n_features)
    return dense_BF.scatter_add_(1, indices_BK.long(), torch.where(used_BK, coef_BK, 0))


def gather_rows_sum(indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, rows_FD: Tensor) -> Tensor:
    """out[b] = sum_k coef[b, k] * rows[indices[b, k]]: the decode, and grad x = d_pre W_enc^T."""
    F = rows_FD.shape[0]
    coef_BK = coef_BK.to(rows_FD.dtype)
    if _is_dense(counts_B, F):
        return dense_codes(indices_BK, coef_BK, counts_B, F) @ rows_FD
    return _csr(indices_BK, coef_BK, counts_B, F) @ rows_FD


def scatter_outer(
    indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, dense_BD: Tensor, n_features: int
) -> tuple[Tensor, Tensor]:
    """(out_FD, sums_F): out[f] = sum over slots naming f of coef * dense[row], sums[f] = sum of coef.

    grad W_dec = f^T d_x_hat and grad W_enc^T = d_pre^T (x - b_dec) with the bias gradient beside it.
    """
    coef_BK = coef_BK.to(dense_BD.dtype)
    if _is_dense(counts_B, n_features):
        dense_BF = dense_codes(indices_BK, coef_BK, counts_B, n_features)
        return dense_BF.T @ dense_BD, dense_BF.sum(dim=0)
    sums_F = feature_sums(indices_BK, coef_BK, counts_B, n_features)
    return _csr_transposed(indices_BK, coef_BK, counts_B, n_features) @ dense_BD, sums_F


def feature_sums(indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, n_features: int) -> Tensor:
    """sums[f] = sum of coef over the used slots naming f (the bias and L1-weight gradients)."""
    _, feature_E, coef_E = _entries(indices_BK, coef_BK, counts_B)
    return coef_BK.new_zeros(n_features).index_add_(0, feature_E, coef_E)


def gather_dot(indices_BK: Tensor, counts_B: Tensor, dense_BD: Tensor, rows_FD: Tensor) -> Tensor:
    """out[b, k] = <dense[b], rows[indices[b, k]]> on used slots, 0 elsewhere: grad of the code values."""
    F = rows_FD.shape[0]
    used_BK = used_slots(counts_B, indices_BK.shape[1])
    if _is_dense(counts_B, F):
        full_BF = dense_BD @ rows_FD.T
        return torch.where(used_BK, full_BF.gather(1, indices_BK.long()), 0)
    pattern = _csr(indices_BK, torch.ones_like(indices_BK, dtype=dense_BD.dtype), counts_B, F)
    sampled_E = torch.sparse.sampled_addmm(pattern, dense_BD, rows_FD.T, beta=0.0).values()
    if sampled_E.numel() == used_BK.numel():
        return sampled_E.reshape(used_BK.shape)
    out_BK = dense_BD.new_zeros(indices_BK.shape)
    out_BK[used_BK] = sampled_E
    return out_BK
