"""Dense PyTorch reference of every kernel: the plain B x F computation the fused paths must match.

Tests run these in float64; the "dense" backend runs them in the working precision with autograd.
Activations (applied to the pre-activations `pre_BF = (x - b_dec) W_enc + b_enc`):

- `relu`: max(pre, 0)
- `jumprelu`: pre where pre > threshold_F, else 0 (the threshold is a constant here)
- `topk`: max(pre, 0) at the k largest pre-activations of each row, else 0
- `batchtopk`: max(pre, 0) at the k * B largest pre-activations of the whole batch, else 0
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from vitsae.errors import InvalidValue

Activation = Literal["relu", "jumprelu", "topk", "batchtopk"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)


def check_activation(activation: str, k: int | None, threshold_F: torch.Tensor | None) -> None:
    """Raise a ValueError naming the valid choices when the activation or its parameter is wrong."""
    if activation not in ACTIVATIONS:
        raise InvalidValue(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if activation in ("topk", "batchtopk") and (k is None or k < 1):
        raise InvalidValue(f"activation {activation!r} needs k >= 1, got k={k}")
    if activation == "jumprelu" and threshold_F is None:
        raise InvalidValue("activation 'jumprelu' needs threshold_F")


def pre_activations(
    x_BD: torch.Tensor, W_enc_DF: torch.Tensor, b_enc_F: torch.Tensor, b_dec_D: torch.Tensor
) -> torch.Tensor:
    """(x - b_dec) W_enc + b_enc, in the weights' dtype."""
    return (x_BD.to(W_enc_DF.dtype) - b_dec_D) @ W_enc_DF + b_enc_F


def activate(
    pre_BF: torch.Tensor, activation: str, k: int | None = None, threshold_F: torch.Tensor | None = None
) -> torch.Tensor:
    """The dense B x F codes of `pre_BF` under `activation` (see the module docstring)."""
    check_activation(activation, k, threshold_F)
    if activation == "relu":
        return torch.relu(pre_BF)
    if activation == "jumprelu":
        return torch.where(pre_BF > threshold_F, pre_BF, 0)
    if activation == "topk":
        top_BK, idx_BK = torch.topk(pre_BF, min(k, pre_BF.shape[1]), dim=1)
        return torch.zeros_like(pre_BF).scatter(1, idx_BK, torch.relu(top_BK))
    flat = pre_BF.reshape(-1)
    top, idx = torch.topk(flat, min(k * pre_BF.shape[0], flat.numel()))
    return torch.zeros_like(flat).scatter(0, idx, torch.relu(top)).reshape(pre_BF.shape)


def weighted_l1(codes_BF: torch.Tensor, weights_F: torch.Tensor) -> torch.Tensor:
    """sum_f |f| * w_f per row (w_f is usually ||W_dec[f]||)."""
    return codes_BF.abs() @ weights_F


def decode(codes_BF: torch.Tensor, W_dec_FD: torch.Tensor, b_dec_D: torch.Tensor) -> torch.Tensor:
    """x_hat = f W_dec + b_dec."""
    return codes_BF @ W_dec_FD + b_dec_D


def firing_counts(codes_BF: torch.Tensor) -> torch.Tensor:
    """How many rows each feature is active (nonzero) in (int64, F)."""
    return (codes_BF != 0).sum(dim=0)
