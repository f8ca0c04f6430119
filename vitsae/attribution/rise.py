"""RISE (Petsiuk, Das and Saenko 2018): saliency as the score-weighted average of random masks.

Captum has no RISE, so it is written here. Each mask is a coarse `cells x cells` grid of cells kept with
probability `keep`, upsampled bilinearly to `(cells + 1)` cell sizes and cropped at a random offset, so
mask edges fall anywhere. The map is `sum_i f(x * M_i + b * (1 - M_i)) M_i / (N keep)`, with b the
baseline (fill) image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def rise_masks(
    n_masks: int, cells: int, keep: float, image_hw: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """`n_masks` smooth random masks in [0, 1], (N, 1, H, W)."""
    height, width = image_hw
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    grid_N1ss = (torch.rand(n_masks, 1, cells, cells, generator=generator) < keep).float()
    up_N1hw = F.interpolate(
        grid_N1ss, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False
    )
    shift_y = torch.randint(0, cell_h, (n_masks,), generator=generator)
    shift_x = torch.randint(0, cell_w, (n_masks,), generator=generator)
    rows = (shift_y.view(-1, 1) + torch.arange(height)).view(n_masks, height, 1)
    cols = (shift_x.view(-1, 1) + torch.arange(width)).view(n_masks, 1, width)
    batch = torch.arange(n_masks).view(-1, 1, 1)
    return up_N1hw[:, 0][batch, rows, cols].unsqueeze(1).clamp_(0.0, 1.0)  # bilinear may overshoot by an ulp


@torch.no_grad()
def rise(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pixels_BCHW: torch.Tensor,
    classes_B: torch.Tensor,
    fill_BCHW: torch.Tensor,
    n_masks: int,
    cells: int,
    keep: float,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """RISE maps (B, H, W) of `score(pixels, classes) -> (B,)`; masks are shared by the images."""
    masks_N1HW = rise_masks(n_masks, cells, keep, tuple(pixels_BCHW.shape[-2:]), generator)
    masks_N1HW = masks_N1HW.to(device=pixels_BCHW.device, dtype=pixels_BCHW.dtype)
    batch = pixels_BCHW.shape[0]
    maps_BHW = torch.zeros(batch, *pixels_BCHW.shape[-2:], dtype=pixels_BCHW.dtype, device=pixels_BCHW.device)
    per_chunk = max(1, batch_size // batch)
    delta_BCHW = pixels_BCHW - fill_BCHW
    for first in range(0, n_masks, per_chunk):
        chunk_M1HW = masks_N1HW[first : first + per_chunk]
        n_chunk = chunk_M1HW.shape[0]
        inputs = fill_BCHW.unsqueeze(1) + chunk_M1HW.unsqueeze(0) * delta_BCHW.unsqueeze(1)
        scores_BM = score(inputs.flatten(0, 1), classes_B.repeat_interleave(n_chunk)).view(batch, n_chunk)
        maps_BHW += torch.einsum("bm,mhw->bhw", scores_BM, chunk_M1HW[:, 0])
    return maps_BHW / (n_masks * keep)
