"""Autograd functions of the sparse encode and decode, generic over a backend's sparse primitives.

A backend (`sparse_torch`, or `triton_ops` on CUDA) provides `encode_select`,
`gather_rows_sum`, `scatter_outer`, `feature_sums` and `gather_dot`; the backward passes below are written
once in terms of them and touch only the active (row, feature) pairs: no B x F gradient is formed.
"""

from __future__ import annotations

from types import ModuleType

import torch

from vitsae.kernels.codes import used_slots


class SparseEncode(torch.autograd.Function):
    """(x, W_enc, b_enc, b_dec, l1_weights) -> (values_BK, indices_BK, counts_B, l1_B, fire_counts_F)."""

    @staticmethod
    def forward(
        ctx,
        ops: ModuleType,
        activation: str,
        k,
        threshold_F,
        x_BD,
        W_enc_DF,
        b_enc_F,
        b_dec_D,
        l1_weights_F,
        precision: str = "float32",
    ):
        indices_BK, values_BK, counts_B, l1_B, fire_F = ops.encode_select(
            x_BD, W_enc_DF, b_enc_F, b_dec_D, activation, k, threshold_F, l1_weights_F, precision
        )
        ctx.ops = ops
        ctx.x_dtype = x_BD.dtype
        ctx.has_l1 = l1_B is not None
        ctx.save_for_backward(x_BD, W_enc_DF, b_dec_D, l1_weights_F, indices_BK, values_BK, counts_B)
        ctx.mark_non_differentiable(indices_BK, counts_B, fire_F)
        if l1_B is None:
            l1_B = values_BK.new_zeros(values_BK.shape[0])
        return values_BK, indices_BK, counts_B, l1_B, fire_F

    @staticmethod
    def backward(ctx, d_values_BK, _d_indices, _d_counts, d_l1_B, _d_fire):
        x_BD, W_enc_DF, b_dec_D, l1_weights_F, indices_BK, values_BK, counts_B = ctx.saved_tensors
        ops = ctx.ops
        F = W_enc_DF.shape[1]
        used_BK = used_slots(counts_B, indices_BK.shape[1])
        d_pre_BK = d_values_BK if d_values_BK is not None else torch.zeros_like(values_BK)
        d_l1w_F = None
        if ctx.has_l1 and d_l1_B is not None:
            sign_BK = torch.sign(values_BK)
            d_pre_BK = d_pre_BK + d_l1_B[:, None] * l1_weights_F[indices_BK.long()] * sign_BK
            if ctx.needs_input_grad[8]:
                d_l1w_F = ops.feature_sums(indices_BK, values_BK.abs() * d_l1_B[:, None], counts_B, F)
        d_pre_BK = torch.where(used_BK, d_pre_BK, 0)
        d_x = d_W_enc = d_b_enc = d_b_dec = d_pre_sum_F = None
        if ctx.needs_input_grad[4]:  # a gather over W_enc's columns: only when x itself needs a gradient
            d_x = ops.gather_rows_sum(indices_BK, d_pre_BK, counts_B, W_enc_DF.T).to(ctx.x_dtype)
        if ctx.needs_input_grad[5] or ctx.needs_input_grad[6]:
            centred_BD = x_BD.to(W_enc_DF.dtype) - b_dec_D
            d_W_enc_FD, d_pre_sum_F = ops.scatter_outer(indices_BK, d_pre_BK, counts_B, centred_BD, F)
            d_W_enc = d_W_enc_FD.T if ctx.needs_input_grad[5] else None
            d_b_enc = d_pre_sum_F if ctx.needs_input_grad[6] else None
        if ctx.needs_input_grad[7]:  # d b_dec = -sum_b d_pre_b W_enc^T = -W_enc (sum_b d_pre_b): exact
            if d_pre_sum_F is None:
                d_pre_sum_F = ops.feature_sums(indices_BK, d_pre_BK, counts_B, F)
            d_b_dec = -(W_enc_DF @ d_pre_sum_F.to(W_enc_DF.dtype))
        return None, None, None, None, d_x, d_W_enc, d_b_enc, d_b_dec, d_l1w_F, None


class SparseDecode(torch.autograd.Function):
    """(values_BK, W_dec_FD, b_dec_D or None) with fixed indices/counts -> x_hat_BD = codes W_dec + b_dec."""

    @staticmethod
    def forward(ctx, ops: ModuleType, indices_BK, counts_B, values_BK, W_dec_FD, b_dec_D):
        ctx.ops = ops
        ctx.save_for_backward(indices_BK, counts_B, values_BK, W_dec_FD)
        x_hat_BD = ops.gather_rows_sum(indices_BK, values_BK, counts_B, W_dec_FD)
        return x_hat_BD if b_dec_D is None else x_hat_BD + b_dec_D

    @staticmethod
    def backward(ctx, d_xhat_BD):
        indices_BK, counts_B, values_BK, W_dec_FD = ctx.saved_tensors
        ops = ctx.ops
        d_xhat_BD = d_xhat_BD.contiguous()
        d_values = d_W_dec = d_b_dec = None
        if ctx.needs_input_grad[3]:
            d_values = ops.gather_dot(indices_BK, counts_B, d_xhat_BD, W_dec_FD).to(values_BK.dtype)
        if ctx.needs_input_grad[4]:
            d_W_dec, _ = ops.scatter_outer(indices_BK, values_BK, counts_B, d_xhat_BD, W_dec_FD.shape[0])
        if ctx.needs_input_grad[5]:
            d_b_dec = d_xhat_BD.sum(dim=0)
        return None, None, None, d_values, d_W_dec, d_b_dec
