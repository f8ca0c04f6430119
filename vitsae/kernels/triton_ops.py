"""The sparse primitives of `functions.py` on Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1).

Same contract as `sparse_torch`. Codes come out sorted largest first (ties: lower feature index), so the
output does not depend on the order in which blocks claimed their slots.

- TopK/BatchTopK: each (row, F-block) writes only its top `kc` candidates, kc a few times the share of
  a row's top-k one block holds on average (not min(k, BLOCK_F)), so the candidate buffer does not grow
  to B x F at large k. A row is exact when no block's last candidate reaches the row's k-th value (the
  batch's cut-off for BatchTopK); the rare row that fails is recomputed densely (its F pre-activations
  only), so the result is always exact.
- ReLU/JumpReLU: the kernel writes at most `max_k` slots per row but counts every active feature; when a
  row has more, the encoder runs again with room for the widest row. The width is remembered between
  calls (one rerun when the codes widen, none in the steady state) and capped at F; codes wider than
  `DENSE_DENSITY_THRESHOLD` x F (ReLU at initialisation) take the dense matmul path instead, as in
  `sparse_torch`, from the first launch that sees them.
- Backward products of codes that wide use dense matmuls; `scatter_outer` sends features with more than
  BLOCKS["seg_heavy"] entries to one dense matmul, so no kernel program walks a long segment serially.

Host syncs on a TopK step: one in the encoder's exactness check, one per `scatter_outer` (its count of
heavy features); `tests/kernels/test_host_syncs.py` counts them.
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

# Tile sizes and bounds; tests under the interpreter set smaller ones.
BLOCKS = {
    "encode_b": 64,
    "encode_f": 128,
    "encode_d": 32,
    "rows_b": 32,
    "rows_d": 128,
    "dot_e": 64,
    "seg_f": 16,
    "seg_heavy": 128,  # features with more entries go to a dense matmul in scatter_outer
}
# First guess of the ReLU/JumpReLU slot width; then the last call's widest row is remembered per encoder
# weight (its storage address and F: an SAE's W_enc keeps its storage across optimiser steps, and the
# SAEs of a sweep each have their own). A stale entry only costs a rerun or a dense call, never a result.
INITIAL_MAX_K = 64
_relu_width: dict[tuple[int, int], int] = {}
_MODES = {"relu": 0, "jumprelu": 1, "topk": 2}
# Encoder matmul precisions: the kernel's DOT argument and the dtype the operands are cast to.
_DOTS = {
    "float32": (0, None),
    "tf32": (1, None),
    "bfloat16": (2, torch.bfloat16),
    "float16": (2, torch.float16),
}


def _operands(x_BD: Tensor, W_enc_DF: Tensor, precision: str) -> tuple[Tensor, Tensor, int]:
    """(x, W_enc, DOT) for the kernel: half precisions cast both operands once (one copy of W_enc per call,
    read at half the bytes by every tile); half x with a float32 precision keeps the half dot."""
    dot, half = _DOTS[precision]
    if half is None and x_BD.dtype in (torch.float16, torch.bfloat16):
        dot, half = 2, x_BD.dtype
    if half is None:
        return x_BD, W_enc_DF, dot
    return x_BD.to(half), W_enc_DF.to(half), dot


def dense_pre(x_BD: Tensor, W_enc_DF: Tensor, bias_F: Tensor, precision: str) -> Tensor:
    """Float32 pre-activations x W_enc + bias with the operands rounded as the kernel rounds half
    precisions (the dense fallbacks; TF32 runs as float32 here, a little more exact than the kernel)."""
    x_h, W_h, _ = _operands(x_BD, W_enc_DF, precision)
    return torch.addmm(bias_F, x_h.float(), W_h.float())


def _launch_encode(x_BD, W_enc_DF, dot, bias_F, thr_F, l1w_F, mode: int, max_k: int, kc: int):
    B, D = x_BD.shape
    F = W_enc_DF.shape[1]
    bb, bf, bd = BLOCKS["encode_b"], BLOCKS["encode_f"], BLOCKS["encode_d"]
    grid = (triton.cdiv(B, bb), triton.cdiv(F, bf))
    width = grid[1] * kc if mode == 2 else max_k
    dev = x_BD.device
    alloc = torch.empty if mode == 2 else torch.zeros  # TopK writes every slot of every row
    idx = alloc(B, width, dtype=torch.int32, device=dev)
    val = alloc(B, width, dtype=torch.float32, device=dev)
    count = torch.zeros(B, dtype=torch.int32, device=dev)
    l1_part = torch.zeros(B, grid[1], dtype=torch.float32, device=dev)
    fire = torch.zeros(F, dtype=torch.int32, device=dev)
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
        max_k,
        MODE=mode,
        KC=kc,
        HAS_L1=l1w_F is not None,
        DOT=dot,
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
    precision: str = "float32",
) -> tuple[Tensor, ...]:
    """Fused encode: (indices_BK int32, values_BK, counts_B int32, l1_B or None, fire_counts_F int64).

    `precision` is the encoder matmul's: "float32", "tf32", "bfloat16" or "float16" (fp32 accumulation)."""
    check_activation(activation, k, threshold_F)
    F = W_enc_DF.shape[1]
    bias_F = (b_enc_F - b_dec_D @ W_enc_DF).float().contiguous()
    l1w_F = None if l1_weights_F is None else l1_weights_F.float().contiguous()
    if activation in ("topk", "batchtopk"):
        return _encode_topk(x_BD, W_enc_DF, bias_F, activation, k, l1w_F, precision)
    key = (W_enc_DF.data_ptr(), F)
    if _relu_width.get(key, 0) > sparse_torch.DENSE_DENSITY_THRESHOLD * F:  # last codes were dense
        return _encode_dense(x_BD, W_enc_DF, bias_F, activation, k, threshold_F, l1w_F, precision)
    x_k, W_k, dot = _operands(x_BD, W_enc_DF, precision)
    thr_F = None if threshold_F is None else threshold_F.float().contiguous()
    max_k = min(max(INITIAL_MAX_K, triton.next_power_of_2(_relu_width.get(key, 1))), F)
    while True:
        idx, val, count, l1_part, fire = _launch_encode(
            x_k, W_k, dot, bias_F, thr_F, l1w_F, _MODES[activation], max_k, 1
        )
        widest = int(count.max()) if count.numel() else 0
        _relu_width[key] = widest
        if widest <= max_k:
            break
        if widest > sparse_torch.DENSE_DENSITY_THRESHOLD * F:  # e.g. at initialisation: no B x F slots
            return _encode_dense(x_BD, W_enc_DF, bias_F, activation, k, threshold_F, l1w_F, precision)
        max_k = min(triton.next_power_of_2(widest), F)
    width = max(widest, 1)
    used = used_slots(count, max_k)
    key = torch.where(used, val, float("-inf"))
    top, top_idx = selection.merge_topk_candidates(key, idx, width)
    indices_BK, values_BK, counts_B = selection.finish_codes(top, top_idx, count)
    l1_B = None if l1w_F is None else l1_part.sum(dim=1)
    return indices_BK, values_BK.to(W_enc_DF.dtype), counts_B, l1_B, fire.long()


def _encode_dense(x_BD, W_enc_DF, bias_F, activation, k, threshold_F, l1w_F, precision):
    """Codes too dense for the sparse encoder: the B x F pre-activations and `sparse_torch`'s packing."""
    pre_BF = dense_pre(x_BD, W_enc_DF, bias_F, precision)
    indices_BK, values_BK, counts_B = sparse_torch.pack_active_codes(pre_BF, activation, k, threshold_F)
    if activation in ("relu", "jumprelu"):  # so the next call can go back to the sparse encoder
        _relu_width[(W_enc_DF.data_ptr(), W_enc_DF.shape[1])] = indices_BK.shape[1]
    values_BK = values_BK.to(W_enc_DF.dtype)
    l1_B, fire_F = sparse_torch.code_statistics(indices_BK, values_BK, counts_B, l1w_F, W_enc_DF.shape[1])
    return indices_BK, values_BK, counts_B, l1_B, fire_F


def candidates_per_block(per_row: int, n_features: int, block_f: int) -> int:
    """Candidates each (row, F-block) writes: four times a block's average share of the row's top
    `per_row` plus four, at most per_row and block_f (then the candidates are exact by construction)."""
    share = -(-4 * per_row * block_f // n_features)
    return min(per_row, block_f, 4 + share)


def _encode_topk(x_BD, W_enc_DF, bias_F, activation, k, l1w_F, precision):
    """TopK: per-block candidates, exact merge. BatchTopK: the batch's top k*B among all candidates.
    Rows some block of which may hide a selected entry are recomputed densely (see the module docstring)."""
    B, F = x_BD.shape[0], W_enc_DF.shape[1]
    bf = BLOCKS["encode_f"]
    per_row = min(k, F) if activation == "topk" else min(4 * k, F)
    kc = candidates_per_block(per_row, F, bf)
    x_k, W_k, dot = _operands(x_BD, W_enc_DF, precision)
    idx, val, *_ = _launch_encode(x_k, W_k, dot, bias_F, None, None, 2, 1, kc)
    n_blocks = idx.shape[1] // kc
    if activation == "topk":
        top, top_idx = selection.merge_topk_candidates(val, idx, per_row)
        cut_B = top[:, -1]
    else:
        n_sel = min(k * B, B * F)
        cut_B = torch.topk(val.reshape(-1), n_sel, sorted=False).values.min().expand(B)
    if kc < min(per_row, bf) or (activation == "batchtopk" and kc < bf):
        last_BN = val.reshape(B, n_blocks, kc)[:, :, -1]
        bad_B = (last_BN >= cut_B[:, None]).any(dim=1)
        if bool(bad_B.any()):
            rows_R = torch.nonzero(bad_B)[:, 0]
            val[rows_R], idx[rows_R] = _exact_candidates(
                x_BD[rows_R], W_enc_DF, bias_F, precision, val.shape[1]
            )
            if activation == "topk":
                top, top_idx = selection.merge_topk_candidates(val, idx, per_row)
            elif _batch_cut_misses_rows(val, k, rows_R):
                return _encode_dense(x_BD, W_enc_DF, bias_F, activation, k, None, l1w_F, precision)
    if activation == "topk":
        indices_BK, values_BK, counts_B = selection.pack_topk(top, top_idx)
    else:
        chosen = torch.zeros(val.numel(), dtype=torch.bool, device=val.device)
        chosen[torch.topk(val.reshape(-1), min(k * B, val.numel())).indices] = True
        chosen = chosen.reshape(val.shape) & (val > 0)
        counts_B = chosen.sum(dim=1)
        widest = max(int(counts_B.max()), 1)
        key = torch.where(chosen, val, float("-inf"))
        sel, sel_idx = selection.merge_topk_candidates(key, idx, widest)
        indices_BK, values_BK, counts_B = selection.finish_codes(sel, sel_idx, counts_B)
    values_BK = values_BK.to(W_enc_DF.dtype)
    l1_B, fire_F = sparse_torch.code_statistics(indices_BK, values_BK, counts_B, l1w_F, F)
    return indices_BK, values_BK, counts_B, l1_B, fire_F


def _exact_candidates(x_RD, W_enc_DF, bias_F, precision, width: int) -> tuple[Tensor, Tensor]:
    """Each row's exact top-`width` (value desc, index asc) from its F pre-activations; past F, -inf."""
    pre_RF = dense_pre(x_RD, W_enc_DF, bias_F, precision)
    top, top_idx = selection.topk_rows(pre_RF, min(width, pre_RF.shape[1]))
    val_RC = pre_RF.new_full((pre_RF.shape[0], width), float("-inf"))
    idx_RC = torch.zeros(val_RC.shape, dtype=torch.int32, device=val_RC.device)
    val_RC[:, : top.shape[1]], idx_RC[:, : top.shape[1]] = top, top_idx.to(torch.int32)
    return val_RC, idx_RC


def _batch_cut_misses_rows(val_BC: Tensor, k: int, rows_R: Tensor) -> bool:
    """Whether a recomputed row holds its exact top-C but still has its C-th value at or above the batch
    cut-off (it might hold more selected entries than C: only the full dense path is then exact)."""
    B = val_BC.shape[0]
    cut = torch.topk(val_BC.reshape(-1), min(k * B, val_BC.numel()), sorted=False).values.min()
    return bool((val_BC[rows_R, -1] >= cut).any())


def _codes_dense(indices_BK: Tensor, n_features: int) -> bool:
    """Codes wide enough (K / F above the measured threshold) that dense matmuls win; K is a shape, so
    deciding needs no device sync."""
    return indices_BK.shape[1] > sparse_torch.DENSE_DENSITY_THRESHOLD * n_features


def gather_rows_sum(indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, rows_FD: Tensor) -> Tensor:
    """out[b] = sum_k coef[b, k] * rows[indices[b, k]] in float32."""
    B, K = indices_BK.shape
    F, D = rows_FD.shape
    if _codes_dense(indices_BK, F):
        return sparse_torch.dense_codes(indices_BK, coef_BK.to(rows_FD.dtype), counts_B, F) @ rows_FD
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
    F, D = rows_FD.shape
    if _codes_dense(indices_BK, F):
        used_BK = used_slots(counts_B, K)
        full_BF = dense_BD.float() @ rows_FD.float().T
        return torch.where(used_BK, full_BF.gather(1, indices_BK.long()), 0)
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


def _by_feature(indices_BK, counts_B, n_features: int):
    """Every slot sorted by feature (stable; unused slots get feature F and sort last), without a device
    sync: (segment offsets F+1 int64, slot order E, entry rows E int32, entry features E int64)."""
    K = indices_BK.shape[1]
    used = used_slots(counts_B, K)
    key_E = torch.where(used, indices_BK.long(), n_features).reshape(-1)
    order_E = sparse_torch.stable_argsort(key_E)
    sorted_E = key_E[order_E]
    seg = torch.searchsorted(sorted_E, torch.arange(n_features + 1, device=key_E.device))
    return seg, order_E, (order_E // K).to(torch.int32), sorted_E


def scatter_outer(
    indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, dense_BD: Tensor, n_features: int
) -> tuple[Tensor, Tensor]:
    """(out_FD, sums_F): per feature, the coefficient-weighted sum of dense rows, and of coefficients.

    Each feature's sum runs in one fixed order (deterministic): a kernel walks features with at most
    BLOCKS["seg_heavy"] entries; the heavier ones (dense latents) are one matmul of their B-wide
    coefficient rows."""
    B, D = dense_BD.shape
    if _codes_dense(indices_BK, n_features):
        dense_BF = sparse_torch.dense_codes(indices_BK, coef_BK.float(), counts_B, n_features)
        return (dense_BF.T @ dense_BD.float()).to(dense_BD.dtype), dense_BF.sum(dim=0).to(coef_BK.dtype)
    seg, order_E, rows_E, feature_E = _by_feature(indices_BK, counts_B, n_features)
    coef_E = coef_BK.reshape(-1)[order_E].float().contiguous()
    start_F, end_F = seg[:-1], seg[1:]
    heavy_F = (end_F - start_F) > BLOCKS["seg_heavy"]
    heavy_H = torch.nonzero(heavy_F)[:, 0]  # one sync: how many heavy features
    dense_BD = dense_BD.contiguous()
    out = torch.empty(n_features, D, dtype=torch.float32, device=dense_BD.device)
    sums = torch.empty(n_features, dtype=torch.float32, device=dense_BD.device)
    grid = (triton.cdiv(n_features, BLOCKS["seg_f"]), triton.cdiv(D, BLOCKS["rows_d"]))
    segment_outer_kernel[grid](
        start_F,
        torch.where(heavy_F, start_F, end_F),
        rows_E,
        coef_E,
        dense_BD,
        out,
        sums,
        n_features,
        D,
        out.stride(0),
        out.stride(1),
        BLOCK_FS=BLOCKS["seg_f"],
        BLOCK_D=BLOCKS["rows_d"],
    )
    if heavy_H.numel():
        coef_HB = _heavy_rows(heavy_H, feature_E, rows_E, coef_E, n_features, B)
        out[heavy_H] = coef_HB @ dense_BD.float()
        sums[heavy_H] = coef_HB.sum(dim=1)
    return out.to(dense_BD.dtype), sums.to(coef_BK.dtype)


def _heavy_rows(heavy_H, feature_E, rows_E, coef_E, n_features: int, n_rows: int) -> Tensor:
    """The H x B coefficient matrix of the heavy features (a row lists a feature once, so every
    (feature, row) cell is written once: deterministic). Other entries go to a discarded extra row."""
    H = heavy_H.shape[0]
    rank_F = torch.full((n_features + 1,), H, dtype=torch.long, device=feature_E.device)
    rank_F[heavy_H] = torch.arange(H, device=feature_E.device)
    target_E = rank_F[feature_E]
    coef_HB = coef_E.new_zeros(H + 1, n_rows)
    coef_HB[target_E, rows_E.long()] = torch.where(target_E < H, coef_E, 0)
    return coef_HB[:H]


def feature_sums(indices_BK: Tensor, coef_BK: Tensor, counts_B: Tensor, n_features: int) -> Tensor:
    """sums[f] = sum of coef over used slots naming f: a segmented sum over the feature-sorted entries
    (fixed order, deterministic)."""
    seg, order_E, _, _ = _by_feature(indices_BK, counts_B, n_features)
    coef_E = coef_BK.reshape(-1)[order_E].float()
    lengths = torch.cat([seg[1:] - seg[:-1], (coef_E.shape[0] - seg[-1]).reshape(1)])
    return torch.segment_reduce(coef_E, "sum", lengths=lengths)[:n_features].to(coef_BK.dtype)
