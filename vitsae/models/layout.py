"""Activations as tokens and back, and the hook-name check shared by every hooked model.

A ViT's tokens are `[CLS?][registers...][patches row-major]`; a CNN's `(B, C, H, W)` map becomes
`H*W` patch tokens of width C, row-major; a pooled `(B, D)` vector becomes one summary token
(counted as `n_cls=1`, no grid). `TokenLayout` (`vitsae/tokens.py`) describes which token is which.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch

from vitsae.errors import InvalidValue


def as_tokens(acts: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Activations in token form (B, T, D).

    (B, C, H, W) maps (or channels-last (B, H, W, C) ones) -> (B, H*W, C) row-major; (B, D) vectors ->
    (B, 1, D); (B, T, D) unchanged. Per-head ViT tensors are flattened by the ViT itself, which knows
    their axes.
    """
    if acts.ndim == 2:
        return acts.unsqueeze(1)
    if acts.ndim == 3:
        return acts
    if acts.ndim == 4 and channels_last:
        return acts.flatten(1, 2)
    if acts.ndim == 4:
        return acts.flatten(2).transpose(1, 2)
    raise InvalidValue(f"cannot read activations of shape {tuple(acts.shape)} as tokens")


def from_tokens(
    tokens_BTD: torch.Tensor, shape: tuple[int, ...] | torch.Size, channels_last: bool = False
) -> torch.Tensor:
    """The inverse of `as_tokens`: tokens (B, T, D) back to a hook's own `shape`.

    Used to write edited activations back into a forward pass: `from_tokens(as_tokens(x), x.shape)` is `x`.
    """
    shape = tuple(shape)
    if len(shape) == 2:
        return tokens_BTD.squeeze(1)
    if len(shape) == 3:
        return tokens_BTD
    if len(shape) == 4 and channels_last:
        return tokens_BTD.reshape(shape)
    if len(shape) == 4:
        batch, channels, height, width = shape
        return tokens_BTD.transpose(1, 2).reshape(batch, channels, height, width)
    raise InvalidValue(f"cannot write tokens back into activations of shape {shape}")


def check_names(requested: Iterable[str], valid: list[str]) -> None:
    """Raise a ValueError naming each unknown hook with its closest valid matches, then all valid names."""
    valid_set = set(valid)
    unknown = [name for name in requested if name not in valid_set]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hints.append(f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    raise InvalidValue(f"unknown hook name(s) {'; '.join(hints)}. Valid hook names: {', '.join(valid)}")
