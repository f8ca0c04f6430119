"""The sparse primitives of `functions.py` on Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1).

Same contract as `sparse_torch`. Codes come out sorted largest first (ties: lower feature index), so the
output does not depend on the order in which blocks claimed their slots. ReLU/JumpReLU overflow: the
kernel writes at most `max_k` slots per row but counts every active feature; when a row has more, the
encoder runs again with room for the widest row, so the codes always hold every active feature.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from vitsae.kernels import selection, sparse_torch
from vitsae.kernels.codes import used_slots
from vitsae.kernels.reference import check_activation
from vitsae.kernels.triton_kernels import (
    encode_kernel,
    gather_dot_kernel,
    gather_rows_kernel,
    segment_outer_kernel,
)

# Tile sizes; tests under the interpreter set larger blocks and smaller shapes.
BLOCKS = {
    "encode_b": 64,
    "encode_f": 128,
    "encode_d": 32,
    "rows_b": 32,
    "rows_d": 128,
    "dot_e": 64,
    "seg_f": 16,
}
# First guess of the ReLU/JumpReLU slot width; grown on overflow.
INITIAL_MAX_K = 64
_MODES = {"relu": 0, "jumprelu": 1, "topk": 2}


def _launch_encode(x_BD, W_enc_DF, bias_F, thr_F, l1w_F, mode: int, max_k: int, kc: int):
    B, D = x_BD.shape
    F = W_enc_DF.shape[1]
    bb, bf, bd = BLOCKS["encode_b"], BLOCKS["encode_f"], BLOCKS["encode_d"]
    grid = (triton.cdiv(B, bb), triton.cdiv(F, bf))
    width = grid[1] * kc if mode == 2 else max_k
    dev = x_BD.device
    idx = torch.zeros(B, width, dtype=torch.int32, device=dev)
    val = torch.zeros(B, width, dtype=torch.float32, device=dev)
    count = torch.zeros(B, dtype=torch.int32, device=dev)
    l1_part = torch.zeros(B, grid[1], dtype=torch.float32, device=dev)
    fire = torch.zeros(F, dtype=torch.int32, device=dev)
    half = x_BD.dtype in (torch.float16, torch.bfloat16)
    encode_kernel[grid](
        x_BD,
        W_enc_DF,
        bias_F,
        thr_F if thr_F is not None else bias_F,
        l1w_F if l1w_F is not None else bias_F,
        idx,
        val,
        count,
        l1_part,
        fire,
        B,
        D,
        F,
        x_BD.stride(0),
        x_BD.stride(1),
        W_enc_DF.stride(0),
        W_enc_DF.stride(1),
        MODE=mode,
        MAX_K=max_k,
        KC=kc,
        HAS_L1=l1w_F is not None,
        HALF_DOT=half,
        BLOCK_B=bb,
        BLOCK_F=bf,
        BLOCK_D=bd,
    )
    return idx, val, count, l1_part, fire


def encode_select(
    x_BD: Tensor,
    W_enc_DF: Tensor,
    b_enc_F: Tensor,
    b_dec_D: Tensor,
    activation: str,
    k: int | None,
    threshold_F: Tensor | None,
    l1_weights_F: Tensor | None,
) -> tuple[Tensor, ...]:
    """Fused encode: (indices_BK int32, values_BK, counts_B int32, l1_B or None, fire_counts_F int64)."""
    check_activation(activation, k, threshold_F)
    bias_F = (b_enc_F - b_dec_D @ W_enc_DF).float().contiguous()
    l1w_F = None if l1_weights_F is None else l1_weights_F.float().contiguous()
    if activation in ("topk", "batchtopk"):
        return _encode_topk(x_BD, W_enc_DF, bias_F, activation, k, l1w_F)
    thr_F = None if threshold_F is None else threshold_F.float().contiguous()
    max_k = INITIAL_MAX_K
    while True:
        idx, val, count, l1_part, fire = _launch_encode(
            x_BD, W_enc_DF, bias_F, thr_F, l1w_F, _MODES[activation], max_k, 1
        )
        widest = int(count.max()) if count.numel() else 0
        if widest <= max_k:
            break
        max_k = triton.next_power_of_2(widest)
    width = max(widest, 1)
    used = used_slots(count, max_k)
    key = torch.where(used, val, float("-inf"))
    top, top_idx = selection.merge_topk_candidates(key, idx, width)
    indices_BK, values_BK, counts_B = selection.finish_codes(top, top_idx, count)
    l1_B = None if l1w_F is None else l1_part.sum(dim=1)
    return indices_BK, values_BK.to(W_enc_DF.dtype), counts_B, l1_B, fire.long()


def _encode_topk(x_BD, W_enc_DF, bias_F, activation, k, l1w_F):
    """TopK: per-block candidates, exact merge. BatchTopK: each row's top-r candidates, then the batch's
    top k*B among them; r doubles while some row had all r of its candidates chosen (it might need more)."""
    B, F = x_BD.shape[0], W_enc_DF.shape[1]
    per_row = min(k, F) if activation == "topk" else min(4 * k, F)
    while True:
        kc = min(per_row, BLOCKS["encode_f"])
        idx, val, *_ = _launch_encode(x_BD, W_enc_DF, bias_F, None, None, 2, 1, kc)
        top, top_idx = selection.merge_topk_candidates(val, idx, per_row)
        if activation == "topk":
            indices_BK, values_BK, counts_B = selection.pack_topk(top, top_idx)
            break
        chosen = torch.zeros_like(top, dtype=torch.bool).reshape(-1)
        chosen[torch.topk(top.reshape(-1), min(k * B, top.numel())).indices] = True
        chosen = chosen.reshape(top.shape) & (top > 0)
        if per_row == F or not bool(chosen[:, -1].any()):
            key = torch.where(chosen, top, float("-inf"))
            widest = max(int(chosen.sum(dim=1).max()), 1)
            sel, sel_idx = selection.merge_topk_candidates(key, top_idx, widest)
            indices_BK, values_BK, counts_B = selection.finish_codes(sel, sel_idx, chosen.sum(dim=1))
            break
        per_row = min(2 * per_row, F)
    values_BK = values_BK.to(W_enc_DF.dtype)
    l1_B, fire_F = sparse_torch.code_statistics(indices_BK, values_BK, counts_B, l1w_F, F)
    return indices_BK, values_BK, counts_B, l1_B, fire_F


def gather_rows_sum(indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, rows_FD: Tensor) -> Tensor:
    """out[b] = sum_k coef[b, k] * rows[indices[b, k]] in float32."""
    B, K = indices_BK.shape
    D = rows_FD.shape[1]
    out = torch.empty(B, D, dtype=torch.float32, device=rows_FD.device)
    grid = (triton.cdiv(B, BLOCKS["rows_b"]), triton.cdiv(D, BLOCKS["rows_d"]))
    gather_rows_kernel[grid](
        indices_BK.contiguous(),
        coef_BK.contiguous(),
        counts_B.contiguous(),
        rows_FD,
        out,
        B,
        D,
        K,
        rows_FD.stride(0),
        rows_FD.stride(1),
        BLOCK_B=BLOCKS["rows_b"],
        BLOCK_D=BLOCKS["rows_d"],
    )
    return out.to(rows_FD.dtype)


def gather_dot(indices_BK: Tensor, counts_B: Tensor, dense_BD: Tensor, rows_FD: Tensor) -> Tensor:
    """out[b, k] = <dense[b], rows[indices[b, k]]> on used slots, 0 elsewhere."""
    B, K = indices_BK.shape
    D = rows_FD.shape[1]
    out = torch.zeros(B, K, dtype=torch.float32, device=rows_FD.device)
    grid = (triton.cdiv(B * K, BLOCKS["dot_e"]),)
    gather_dot_kernel[grid](
        indices_BK.contiguous(),
        counts_B.contiguous(),
        dense_BD.contiguous(),
        rows_FD,
        out,
        B,
        D,
        K,
        rows_FD.stride(0),
        rows_FD.stride(1),
        BLOCK_E=BLOCKS["dot_e"],
        BLOCK_D=BLOCKS["rows_d"],
    )
    return out


def _by_feature(indices_BK, coef_BK, counts_B, n_features: int):
    """Used slots sorted by feature (stable): (segment offsets F+1, entry rows, entry coefficients)."""
    used = used_slots(counts_B, indices_BK.shape[1])
    feature_E = indices_BK[used].long()
    order = sparse_torch.stable_argsort(feature_E)
    rows_E = torch.nonzero(used)[:, 0][order].to(torch.int32)
    seg = torch.zeros(n_features + 1, dtype=torch.int32, device=indices_BK.device)
    seg[1:] = torch.cumsum(torch.bincount(feature_E, minlength=n_features), 0)
    return seg, rows_E, coef_BK[used][order].float().contiguous()


def scatter_outer(
    indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, dense_BD: Tensor, n_features: int
) -> tuple[Tensor, Tensor]:
    """(out_FD, sums_F): per feature, the coefficient-weighted sum of dense rows, and of coefficients."""
    D = dense_BD.shape[1]
    seg, rows_E, coef_E = _by_feature(indices_BK, coef_BK, counts_B, n_features)
    out = torch.empty(n_features, D, dtype=torch.float32, device=dense_BD.device)
    sums = torch.empty(n_features, dtype=torch.float32, device=dense_BD.device)
    grid = (triton.cdiv(n_features, BLOCKS["seg_f"]), triton.cdiv(D, BLOCKS["rows_d"]))
    segment_outer_kernel[grid](
        seg,
        rows_E,
        coef_E,
        dense_BD.contiguous(),
        out,
        sums,
        n_features,
        D,
        out.stride(0),
        out.stride(1),
        BLOCK_FS=BLOCKS["seg_f"],
        BLOCK_D=BLOCKS["rows_d"],
    )
    return out.to(dense_BD.dtype), sums.to(coef_BK.dtype)


def feature_sums(indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, n_features: int) -> Tensor:
    """sums[f] = sum of coef over used slots naming f: a segmented sum over the feature-sorted entries."""
    seg, _, coef_E = _by_feature(indices_BK, coef_BK, counts_B, n_features)
    lengths_F = (seg[1:] - seg[:-1]).long()
    return torch.segment_reduce(coef_E, "sum", lengths=lengths_F).to(coef_BK.dtype)
