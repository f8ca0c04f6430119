"""The public encode/decode with the backend dispatch used by the SAE modules.

`backend` is one of:
- "dense": plain PyTorch B x F matmuls with autograd (the reference, in the working precision);
- "sparse": the sparse path: Triton kernels on CUDA when Triton imports, else sparse PyTorch (CSR
  products); the sparse PyTorch products themselves switch to dense matmuls for codes denser than
  the measured `DENSE_DENSITY_THRESHOLD`;
- "auto": "dense" for TopK/BatchTopK with k / F above that threshold (the selection would be
  wasted), else "sparse".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, get_args

import torch

from vitsae.errors import InvalidValue
from vitsae.kernels import reference, sparse_torch
from vitsae.kernels.codes import SparseCodes
from vitsae.kernels.functions import SparseDecode, SparseEncode

Backend = Literal["dense", "sparse", "auto"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# The sparse encoder's matmul: "auto" is bfloat16 operands with float32 accumulation on CUDA (tensor
# cores; docs/design.md allows bf16/tf32 matmuls on GPU) and float32 elsewhere.
Precision = Literal["auto", "float32", "tf32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class Encoded:
    """The encoder's output: the codes, the weighted L1 per row (None without weights), firing counts."""

    codes: SparseCodes
    l1_B: torch.Tensor | None
    fire_counts_F: torch.Tensor


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InvalidValue(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKENDS)}")


def sparse_ops(device: torch.device) -> ModuleType:
    """The sparse primitives for `device`: Triton on CUDA when available, else sparse PyTorch."""
    if device.type == "cuda":
        try:
            return importlib.import_module("vitsae.kernels.triton_ops")
        except ImportError:
            return sparse_torch
    return sparse_torch


def resolve_backend(backend: str, activation: str, k: int | None, n_features: int) -> str:
    """ "dense" or "sparse" for one call (see the module docstring)."""
    check_backend(backend)
    if backend != "auto":
        return backend
    if activation in ("topk", "batchtopk") and k is not None:
        return "dense" if k / n_features > sparse_torch.DENSE_DENSITY_THRESHOLD else "sparse"
    return "sparse"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The encoder matmul precision for one call ("auto": bfloat16 on CUDA, else float32)."""
    if precision not in PRECISIONS:
        raise InvalidValue(f"unknown encoder precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return precision


def encode(
    x_BD: torch.Tensor,
    W_enc_DF: torch.Tensor,
    b_enc_F: torch.Tensor,
    b_dec_D: torch.Tensor,
    *,
    activation: str,
    k: int | None = None,
    threshold_F: torch.Tensor | None = None,
    l1_weights_F: torch.Tensor | None = None,
    backend: str = "auto",
    precision: str = "auto",
) -> Encoded:
    """Sparse codes of f = act((x - b_dec) W_enc + b_enc), differentiable in x, W_enc, b_enc, b_dec and
    `l1_weights_F` (through `l1_B`). JumpReLU's threshold is a constant on the sparse path.
    `precision` is the sparse encoder matmul's (see `Precision`; gradients are float32 either way); the
    dense backend computes in the weights' dtype under PyTorch's own matmul settings."""
    reference.check_activation(activation, k, threshold_F)
    _check_encoder_shapes(x_BD, W_enc_DF, b_enc_F, b_dec_D, threshold_F, l1_weights_F)
    mm_precision = resolve_precision(precision, x_BD.device)
    F = W_enc_DF.shape[1]
    if resolve_backend(backend, activation, k, F) == "dense":
        pre_BF = reference.pre_activations(x_BD, W_enc_DF, b_enc_F, b_dec_D)
        codes_BF = reference.activate(pre_BF, activation, k, threshold_F)
        l1_B = None if l1_weights_F is None else reference.weighted_l1(codes_BF, l1_weights_F)
        width = min(k, F) if activation == "topk" else None  # TopK codes have k slots on every path
        return Encoded(SparseCodes.from_dense(codes_BF, width), l1_B, reference.firing_counts(codes_BF))
    if threshold_F is not None and threshold_F.requires_grad and torch.is_grad_enabled():
        raise InvalidValue(
            "the sparse encoder treats the JumpReLU threshold as a constant (its straight-through gradient "
            "needs pre-activations just below the threshold, which sparse codes do not hold); "
            "use backend='dense' to train the threshold, or pass threshold_F.detach()"
        )
    ops = sparse_ops(x_BD.device)
    values_BK, indices_BK, counts_B, l1_B, fire_F = SparseEncode.apply(
        ops, activation, k, threshold_F, x_BD, W_enc_DF, b_enc_F, b_dec_D, l1_weights_F, mm_precision
    )
    codes = SparseCodes(indices_BK, values_BK, counts_B, packed=True)
    return Encoded(codes, None if l1_weights_F is None else l1_B, fire_F)


def decode(
    codes: SparseCodes, W_dec_FD: torch.Tensor, b_dec_D: torch.Tensor | None, *, backend: str = "auto"
) -> torch.Tensor:
    """x_hat = codes W_dec + b_dec (no bias when b_dec_D is None), differentiable in the code values,
    W_dec and b_dec."""
    check_backend(backend)
    F, D = W_dec_FD.shape
    if b_dec_D is not None and b_dec_D.shape != (D,):
        raise InvalidValue(f"b_dec {tuple(b_dec_D.shape)} does not match W_dec {tuple(W_dec_FD.shape)}")
    if backend == "dense":
        x_hat_BD = codes.to_dense(F).to(W_dec_FD.dtype) @ W_dec_FD
        return x_hat_BD if b_dec_D is None else x_hat_BD + b_dec_D
    ops = sparse_ops(W_dec_FD.device)
    return SparseDecode.apply(ops, codes.indices_BK, _slots_in_use(codes), codes.values_BK, W_dec_FD, b_dec_D)


def _slots_in_use(codes: SparseCodes) -> torch.Tensor:
    """Per-row slot counts for the sparse products: `counts_B` when every nonzero value sits in its row's
    first counts_B[b] slots (codes marked `packed`, or found so: one device sync), else every slot (codes
    packed otherwise, e.g. a TopK with ReLU'd zeros in place): the products are then exact too, padding
    slots adding zero."""
    if codes.packed:
        return codes.counts_B
    if bool(((codes.values_BK != 0) & ~codes.used_BK).any()):
        return torch.full_like(codes.counts_B, codes.k)
    return codes.counts_B


def _check_encoder_shapes(x_BD, W_enc_DF, b_enc_F, b_dec_D, threshold_F, l1_weights_F) -> None:
    if x_BD.dim() != 2 or W_enc_DF.dim() != 2 or x_BD.shape[1] != W_enc_DF.shape[0]:
        raise InvalidValue(f"x {tuple(x_BD.shape)} does not match W_enc {tuple(W_enc_DF.shape)} ([D, F])")
    D, F = W_enc_DF.shape
    for name, vec, n in (
        ("b_enc", b_enc_F, F),
        ("b_dec", b_dec_D, D),
        ("threshold", threshold_F, F),
        ("l1_weights", l1_weights_F, F),
    ):
        if vec is not None and vec.shape != (n,):
            raise InvalidValue(f"{name} {tuple(vec.shape)} does not match W_enc {tuple(W_enc_DF.shape)}")
