"""Which tokens of a hook are stored, and the maths between a token index and an image patch.

A hook's token axis is `[CLS…][registers…][patches row-major]` (CNN maps: patches only, one per
spatial position). These pure functions are shared by the harvester (which rows to keep) and the
reader (row -> image patch and back), so both sides agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from vitsae.errors import InvalidValue

TokenSelection = Literal["all", "cls", "patches"]
TOKEN_SELECTIONS: tuple[str, ...] = get_args(TokenSelection)


@dataclass(frozen=True)
class Layout:
    """How a hook's token axis maps to the image: `n_cls` class tokens, then `n_registers`
    register tokens, then a `grid_hw` grid of patches in row-major order ((0, 0): no patches, as for a
    pooled output)."""

    n_cls: int
    n_registers: int
    grid_hw: tuple[int, int]

    @property
    def n_tokens(self) -> int:
        return self.n_cls + self.n_registers + self.grid_hw[0] * self.grid_hw[1]

    @property
    def first_patch(self) -> int:
        return self.n_cls + self.n_registers

    @classmethod
    def of(cls, layout: Any) -> Layout:
        """From any object or dict with `n_cls`, `n_registers` and `grid_hw` (e.g. a models TokenLayout)."""
        get = layout.get if isinstance(layout, dict) else lambda name: getattr(layout, name)
        grid_h, grid_w = get("grid_hw") or (0, 0)
        return cls(int(get("n_cls")), int(get("n_registers")), (int(grid_h), int(grid_w)))

    def to_dict(self) -> dict[str, Any]:
        return {"n_cls": self.n_cls, "n_registers": self.n_registers, "grid_hw": list(self.grid_hw)}


def select_tokens(layout: Layout, selection: str, include_registers: bool = False) -> np.ndarray:
    """The token indices (int32, increasing) kept for every image under `selection`."""
    if selection not in TOKEN_SELECTIONS:
        raise InvalidValue(f"unknown token selection {selection!r}; valid: {list(TOKEN_SELECTIONS)}")
    cls_tokens = np.arange(layout.n_cls)
    registers = np.arange(layout.n_cls, layout.first_patch)
    patches = np.arange(layout.first_patch, layout.n_tokens)
    if selection == "cls":
        if layout.n_cls == 0:
            raise InvalidValue(
                "token selection 'cls' needs a class token, but this hook has none "
                "(a CNN map or a model without CLS); use 'all' or 'patches'"
            )
        kept = cls_tokens
    elif selection == "patches":
        kept = patches
    else:
        kept = np.concatenate([cls_tokens, registers if include_registers else registers[:0], patches])
    return kept.astype(np.int32)


def token_to_patch(layout: Layout, token_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patch (row, col) of each token index; (-1, -1) for class and register tokens."""
    token_index = np.asarray(token_index, dtype=np.int64)
    if np.any((token_index < 0) | (token_index >= layout.n_tokens)):
        raise IndexError(f"token index out of range [0, {layout.n_tokens})")
    patch = token_index - layout.first_patch
    is_patch = patch >= 0
    row, col = np.divmod(np.where(is_patch, patch, 0), max(layout.grid_hw[1], 1))
    return np.where(is_patch, row, -1), np.where(is_patch, col, -1)


def patch_to_token(layout: Layout, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Token index of each patch (row, col)."""
    row, col = np.asarray(row, dtype=np.int64), np.asarray(col, dtype=np.int64)
    grid_h, grid_w = layout.grid_hw
    if np.any((row < 0) | (row >= grid_h) | (col < 0) | (col >= grid_w)):
        raise IndexError(f"patch (row, col) out of the {grid_h}x{grid_w} grid")
    return layout.first_patch + row * grid_w + col


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
