"""Token-grid activation maps brought to image resolution for overlays.

A ViT feature's map is its patch grid, a CNN feature's map the spatial grid of its layer; either way a
[gh, gw] array covers the model's input image and is upsampled bilinearly (PIL, float mode) to it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vitsae.errors import InvalidValue


def upsample_map(map_hw: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a [gh, gw] map to `size_wh` (width, height); float32 [height, width].

    Pixel centres are aligned (PIL's convention), so each patch's value sits at its patch's centre.
    """
    map_hw = np.asarray(map_hw, dtype=np.float32)
    if map_hw.ndim != 2:
        raise InvalidValue(f"an activation map must be 2-d [gh, gw], got shape {map_hw.shape}")
    resized = Image.fromarray(map_hw, mode="F").resize(size_wh, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def patch_box(
    row: int, col: int, grid_hw: tuple[int, int], size_wh: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) that patch (row, col) covers in an image of `size_wh`."""
    grid_h, grid_w = grid_hw
    width, height = size_wh
    if not (0 <= row < grid_h and 0 <= col < grid_w):
        raise IndexError(f"patch ({row}, {col}) is outside the {grid_h}x{grid_w} grid")
    return (
        round(col * width / grid_w),
        round(row * height / grid_h),
        round((col + 1) * width / grid_w),
        round((row + 1) * height / grid_h),
    )
