"""The token axis of a hook and the maths between a token index and an image patch.

A hook's tokens are `[CLS…][registers…][patches row-major]`: a ViT's residual stream has all three, a CNN's
`(B, C, H, W)` map becomes `H*W` patch tokens of width C (no prefix), and a pooled `(B, D)` vector becomes
one summary token (counted as `n_cls=1`, no grid). `TokenLayout` says which is which; the functions below
are shared by the models (which tokens a hook has), the harvester (which rows to keep), the reader (row ->
image patch and back), the statistics and the browser, so every side agrees by construction.

This module imports only numpy, so stores and statistics can use it without loading torch models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

TokenSelection = Literal["all", "cls", "patches"]
TOKEN_SELECTIONS: tuple[str, ...] = ("all", "cls", "patches")


@dataclass(frozen=True)
class TokenLayout:
    """The token axis of one hook: `n_cls` summary tokens, then registers, then a row-major patch grid.

    `grid_hw` is None when the hook has no patch tokens (pooled outputs, logits); `width` is each token's
    size (D, or C of a CNN map).
    """

    n_cls: int
    n_registers: int
    grid_hw: tuple[int, int] | None
    width: int

    @property
    def n_prefix(self) -> int:
        """Tokens before the first patch token."""
        return self.n_cls + self.n_registers

    @property
    def n_patches(self) -> int:
        return 0 if self.grid_hw is None else self.grid_hw[0] * self.grid_hw[1]

    @property
    def n_tokens(self) -> int:
        return self.n_prefix + self.n_patches

    def patch_of(self, token: int) -> tuple[int, int] | None:
        """(row, col) of the patch a token stands for, or None for CLS/register/summary tokens."""
        if not 0 <= token < self.n_tokens:
            raise IndexError(f"token {token} out of range for a layout of {self.n_tokens} tokens")
        if token < self.n_prefix or self.grid_hw is None:
            return None
        return divmod(token - self.n_prefix, self.grid_hw[1])

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `token_layout` entry (`width` is written beside it). No grid is written
        `[0, 0]`, as format version 1 always has."""
        return {"n_cls": self.n_cls, "n_registers": self.n_registers, "grid_hw": list(self.grid_hw or (0, 0))}

    @classmethod
    def from_dict(cls, entry: dict[str, Any], width: int) -> TokenLayout:
        """Read a `to_dict()` entry; a missing, null or `[0, 0]` grid means no grid."""
        grid = entry.get("grid_hw")
        grid_hw = None if not grid or 0 in grid else (int(grid[0]), int(grid[1]))
        return cls(int(entry["n_cls"]), int(entry["n_registers"]), grid_hw, int(width))


def select_tokens(layout: TokenLayout, selection: str, include_registers: bool = False) -> np.ndarray:
    """The token indices (int32, increasing) kept for every image under `selection`."""
    if selection not in TOKEN_SELECTIONS:
        raise ValueError(f"unknown token selection {selection!r}; valid: {list(TOKEN_SELECTIONS)}")
    cls_tokens = np.arange(layout.n_cls)
    registers = np.arange(layout.n_cls, layout.n_prefix)
    patches = np.arange(layout.n_prefix, layout.n_tokens)
    if selection == "cls":
        if layout.n_cls == 0:
            raise ValueError(
                "token selection 'cls' needs a class token, but this hook has none "
                "(a CNN map or a model without CLS); use 'all' or 'patches'"
            )
        kept = cls_tokens
    elif selection == "patches":
        kept = patches
    else:
        kept = np.concatenate([cls_tokens, registers if include_registers else registers[:0], patches])
    return kept.astype(np.int32)


def token_to_patch(layout: TokenLayout, token_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patch (row, col) of each token index; (-1, -1) for class, register and summary tokens."""
    token_index = np.asarray(token_index, dtype=np.int64)
    if np.any((token_index < 0) | (token_index >= layout.n_tokens)):
        raise IndexError(f"token index out of range [0, {layout.n_tokens})")
    patch = token_index - layout.n_prefix
    is_patch = patch >= 0
    grid_w = 1 if layout.grid_hw is None else layout.grid_hw[1]
    row, col = np.divmod(np.where(is_patch, patch, 0), grid_w)
    return np.where(is_patch, row, -1), np.where(is_patch, col, -1)


def patch_to_token(layout: TokenLayout, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Token index of each patch (row, col)."""
    row, col = np.asarray(row, dtype=np.int64), np.asarray(col, dtype=np.int64)
    if layout.grid_hw is None:
        raise IndexError("this hook has no patch grid (a pooled output): no token stands for a patch")
    grid_h, grid_w = layout.grid_hw
    if np.any((row < 0) | (row >= grid_h) | (col < 0) | (col >= grid_w)):
        raise IndexError(f"patch (row, col) out of the {grid_h}x{grid_w} grid")
    return layout.n_prefix + row * grid_w + col


def provenance_rows(image_index_B: np.ndarray, tokens_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image index int64, token index int32) of the rows a batch adds: each image's kept tokens in turn."""
    image_index_B = np.asarray(image_index_B, dtype=np.int64)
    tokens_T = np.asarray(tokens_T, dtype=np.int32)
    return np.repeat(image_index_B, len(tokens_T)), np.tile(tokens_T, len(image_index_B))


def find_row(image_R: np.ndarray, token_R: np.ndarray, image: int, token: int) -> int | None:
    """The row holding (image, token) in provenance arrays sorted by (image, token); None if absent."""
    lo = int(np.searchsorted(image_R, image, "left"))
    hi = int(np.searchsorted(image_R, image, "right"))
    hit = lo + int(np.searchsorted(token_R[lo:hi], token))
    return hit if hit < hi and int(token_R[hit]) == token else None
