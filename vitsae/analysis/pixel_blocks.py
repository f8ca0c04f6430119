"""Pixel counts of thresholded, upsampled patch maps, computed only where a map can exceed its threshold.

Bilinear (or nearest) upsampling makes each output pixel a convex combination of at most 2x2 patch values,
and the pixels fall into blocks that read the same 2x2 patches, with weights that depend only on the
pixel's place in the block. A convex combination never exceeds its largest term, so a block can hold a
pixel above a unit's threshold only when one of its patches is above it. Dissection needs, per image and
unit, only the number of on-pixels and their overlap with each concept mask; computing just the blocks that
touch an above-threshold patch gives the same counts as upsampling every map at full resolution
(`vitsae.analysis.dissection.maps_to_masks`) for a fraction of the work when features are sparse.

The source index and weights follow PyTorch's `interpolate` (`align_corners=False`; "nearest" is its
legacy nearest), so a pixel's value can differ from the full upsampling only in the last bit. A block's
on-pixels and the concept masks are packed into 64-bit words (one bit per pixel slot), so an overlap is a
popcount of an AND rather than a float product over the block's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_bits(bits_XL: torch.Tensor) -> torch.Tensor:
    """Bool [..., L] as int64 words [..., ceil(L / 64)], slot l at bit l % 64 of word l // 64."""
    n_slots = bits_XL.shape[-1]
    n_words = -(-n_slots // 64)
    if n_words * 64 != n_slots:
        bits_XL = F.pad(bits_XL, (0, n_words * 64 - n_slots))
    bytes_X8 = bits_XL.contiguous().view(torch.uint8).reshape(*bits_XL.shape[:-1], n_words * 8, 8)
    return (bytes_X8 << _BIT_SHIFTS).sum(-1, dtype=torch.uint8).view(torch.int64)


def popcount(words_XW: torch.Tensor) -> torch.Tensor:
    """Set bits of int64 words [..., W], summed over the last axis (bytewise SWAR, no sign issues)."""
    b = words_XW.contiguous().view(torch.uint8)
    b = b - ((b >> 1) & 0x55)
    b = (b & 0x33) + ((b >> 2) & 0x33)
    b = (b + (b >> 4)) & 0x0F
    return b.sum(-1, dtype=torch.int64)


def _axis_sources(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: the two source indices and the weight of the second."""
    out = np.arange(n_out)
    scale = np.float32(n_in) / np.float32(n_out)
    if mode == "nearest":
        first = np.minimum(np.floor(out.astype(np.float32) * scale).astype(np.int64), n_in - 1)
        return first, first, np.zeros(n_out, dtype=np.float32)
    real = np.maximum(scale * (out.astype(np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    first = np.minimum(real.astype(np.int64), n_in - 1)
    second = np.minimum(first + 1, n_in - 1)
    weight = np.clip(real - first.astype(np.float32), 0, 1).astype(np.float32)
    return first, second, weight


def _axis_blocks(n_in: int, n_out: int, mode: str) -> tuple[torch.Tensor, ...]:
    """Along one axis: runs of output indices reading the same two sources, at most ceil(out/in) long.

    Returns (sources [S, 2], output index [S, L] (0 where padded), weight of the second source [S, L],
    valid [S, L]).
    """
    first, second, weight = _axis_sources(n_in, n_out, mode)
    longest = -(-n_out // n_in)
    runs: list[tuple[int, int, list[int]]] = []
    for i in range(n_out):
        pair = (int(first[i]), int(second[i]))
        if runs and runs[-1][:2] == pair and len(runs[-1][2]) < longest:
            runs[-1][2].append(i)
        else:
            runs.append((*pair, [i]))
    sources = torch.tensor([run[:2] for run in runs], dtype=torch.long)
    index = torch.zeros((len(runs), longest), dtype=torch.long)
    valid = torch.zeros((len(runs), longest), dtype=torch.bool)
    for s, (_, _, members) in enumerate(runs):
        index[s, : len(members)] = torch.tensor(members)
        valid[s, : len(members)] = True
    second_weight = torch.from_numpy(weight)[index] * valid
    return sources, index, second_weight, valid


@dataclass(frozen=True)
class PixelBlocks:
    """How a [gh, gw] patch map reaches [H, W] pixels, cut into G blocks of Lr x Lc pixel slots."""

    grid_hw: tuple[int, int]
    size_hw: tuple[int, int]
    corners_G4: torch.Tensor  # flat patch index of each block's (r0, c0), (r0, c1), (r1, c0), (r1, c1)
    row_G: torch.Tensor  # each block's row run
    col_G: torch.Tensor  # each block's column run
    row_weight_RL: torch.Tensor  # weight of the second source row, per row run and slot
    col_weight_SL: torch.Tensor
    row_valid_RL: torch.Tensor
    col_valid_SL: torch.Tensor
    pixel_GL: torch.Tensor  # flat pixel index of each block slot (0 where padded)
    valid_words_GW: torch.Tensor  # each block's real (unpadded) slots, packed
    blocks_PJ: torch.Tensor  # the blocks reading each patch, -1 padded

    @classmethod
    def build(cls, grid_hw: tuple[int, int], size_hw: tuple[int, int], mode: str) -> PixelBlocks:
        """`mode` "bilinear" or "nearest"; a size equal to the grid is the identity either way."""
        (gh, gw), (height, width) = grid_hw, size_hw
        row_src, row_index, row_weight, row_valid = _axis_blocks(gh, height, mode)
        col_src, col_index, col_weight, col_valid = _axis_blocks(gw, width, mode)
        n_rows, n_cols = row_src.shape[0], col_src.shape[0]
        row_G = torch.arange(n_rows).repeat_interleave(n_cols)
        col_G = torch.arange(n_cols).repeat(n_rows)
        r, c = row_src[row_G], col_src[col_G]
        corners_G4 = (r[:, [0, 0, 1, 1]] * gw + c[:, [0, 1, 0, 1]]).contiguous()
        pixel_GL = (row_index[row_G][:, :, None] * width + col_index[col_G][:, None, :]).flatten(1)
        valid_GL = (row_valid[row_G][:, :, None] & col_valid[col_G][:, None, :]).flatten(1)
        readers = [[] for _ in range(gh * gw)]
        for g, corners in enumerate(corners_G4.tolist()):
            for patch in set(corners):
                readers[patch].append(g)
        blocks_PJ = torch.full((gh * gw, max(map(len, readers))), -1, dtype=torch.long)
        for patch, blocks in enumerate(readers):
            blocks_PJ[patch, : len(blocks)] = torch.tensor(blocks, dtype=torch.long)
        return cls(
            (gh, gw),
            (height, width),
            corners_G4,
            row_G,
            col_G,
            row_weight,
            col_weight,
            row_valid,
            col_valid,
            pixel_GL,
            pack_bits(valid_GL),
            blocks_PJ,
        )

    @property
    def n_blocks(self) -> int:
        return self.corners_G4.shape[0]

    def mask_words(self, masks_cN: torch.Tensor) -> torch.Tensor:
        """Flat [c, H*W] bool masks as each block's packed slots [G, c, W]."""
        return pack_bits(masks_cN.bool()[:, self.pixel_GL].permute(1, 0, 2))

    def count(
        self, maps_aP: torch.Tensor, threshold_a: torch.Tensor, mask_words_GcW: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit, its on-pixels (upsampled map > threshold) [a] and their overlap with each mask [a, c]."""
        n_units, n_masks = maps_aP.shape[0], mask_words_GcW.shape[1]
        area_a = torch.zeros(n_units, dtype=torch.long)
        inter_ac = torch.zeros((n_units, n_masks), dtype=torch.long)
        unit_e0, patch_e0 = (maps_aP > threshold_a[:, None]).nonzero(as_tuple=True)
        if unit_e0.numel() == 0:
            return area_a, inter_ac
        readers_e0J = self.blocks_PJ[patch_e0]
        pairs = torch.unique((unit_e0[:, None] * self.n_blocks + readers_e0J)[readers_e0J >= 0])
        unit_e, block_e = pairs // self.n_blocks, pairs % self.n_blocks
        corner_e4 = maps_aP[unit_e[:, None], self.corners_G4[block_e]]
        row_e, col_e = self.row_G[block_e], self.col_G[block_e]
        col_w1, row_w1 = self.col_weight_SL[col_e], self.row_weight_RL[row_e]
        top_eC = corner_e4[:, :1] * (1 - col_w1) + corner_e4[:, 1:2] * col_w1
        bottom_eC = corner_e4[:, 2:3] * (1 - col_w1) + corner_e4[:, 3:4] * col_w1
        value_eRC = top_eC[:, None, :] * (1 - row_w1)[:, :, None] + bottom_eC[:, None, :] * row_w1[:, :, None]
        on_eW = pack_bits((value_eRC > threshold_a[unit_e][:, None, None]).flatten(1))
        on_eW &= self.valid_words_GW[block_e]
        area_a.index_add_(0, unit_e, popcount(on_eW))
        if n_masks:
            inter_ac.index_add_(0, unit_e, popcount(on_eW[:, None, :] & mask_words_GcW[block_e]))
        return area_a, inter_ac
