"""Block-wise pixel counts against full-resolution upsampling (hypothesis over grids, sizes and modes)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.analysis.dissection import maps_to_masks
from vitsae.analysis.pixel_blocks import PixelBlocks, pack_bits, popcount


def _dense_counts(maps_aP, threshold_a, masks_cN, grid_hw, size_hw, mode):
    maps_aGG = maps_aP.reshape(-1, *grid_hw)
    on_aN = (
        maps_to_masks(maps_aGG, size_hw, mode).reshape(maps_aP.shape[0], size_hw[0] * size_hw[1])
        > threshold_a[:, None]
    ).float()
    return on_aN.sum(1).long(), (on_aN @ masks_cN.float().T).long()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    grid_hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    size_hw=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    mode=st.sampled_from(["bilinear", "nearest"]),
    n_units=st.integers(0, 6),
    n_masks=st.integers(0, 3),
    density=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_block_counts_equal_the_full_upsampling(grid_hw, size_hw, mode, n_units, n_masks, density, seed):
    generator = torch.Generator().manual_seed(seed)
    n_patches = grid_hw[0] * grid_hw[1]
    maps_aP = torch.rand(n_units, n_patches, generator=generator)
    maps_aP *= torch.rand(n_units, n_patches, generator=generator) < density
    threshold_a = torch.rand(n_units, generator=generator) * 0.6
    masks_cN = torch.rand(n_masks, size_hw[0] * size_hw[1], generator=generator) < 0.5
    blocks = PixelBlocks.build(grid_hw, size_hw, mode)
    area_a, inter_ac = blocks.count(maps_aP, threshold_a, blocks.mask_words(masks_cN))
    want_area, want_inter = _dense_counts(maps_aP, threshold_a, masks_cN, grid_hw, size_hw, mode)
    assert torch.equal(area_a, want_area)
    assert torch.equal(inter_ac, want_inter)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    grid_hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    size_hw=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    mode=st.sampled_from(["bilinear", "nearest"]),
)
def test_blocks_tile_the_image_once_and_list_their_readers(grid_hw, size_hw, mode):
    blocks = PixelBlocks.build(grid_hw, size_hw, mode)
    valid_GL = (
        blocks.row_valid_RL[blocks.row_G][:, :, None] & blocks.col_valid_SL[blocks.col_G][:, None, :]
    ).flatten(1)
    pixels = blocks.pixel_GL[valid_GL]
    assert torch.equal(pixels.sort().values, torch.arange(size_hw[0] * size_hw[1]))
    for patch in range(grid_hw[0] * grid_hw[1]):
        readers = set(blocks.blocks_PJ[patch][blocks.blocks_PJ[patch] >= 0].tolist())
        assert readers == {g for g in range(blocks.n_blocks) if patch in blocks.corners_G4[g].tolist()}


def test_a_unit_below_its_threshold_everywhere_costs_nothing_and_counts_zero():
    blocks = PixelBlocks.build((8, 8), (64, 64), "bilinear")
    maps_aP = torch.full((3, 64), 0.5)
    area_a, inter_ac = blocks.count(
        maps_aP, torch.ones(3), blocks.mask_words(torch.ones((2, 4096), dtype=torch.bool))
    )
    assert area_a.tolist() == [0, 0, 0]
    assert inter_ac.tolist() == [[0, 0]] * 3


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    rows=st.integers(0, 5),
    n_slots=st.integers(1, 200),
    seed=st.integers(0, 2**31 - 1),
)
def test_packed_bits_keep_each_slot_and_popcount_counts_them(rows, n_slots, seed):
    bits_XL = torch.rand(rows, n_slots, generator=torch.Generator().manual_seed(seed)) < 0.5
    words_XW = pack_bits(bits_XL)
    assert words_XW.shape == (rows, -(-n_slots // 64))
    for x in range(rows):
        unpacked = [(int(words_XW[x, l // 64]) >> (l % 64)) & 1 for l in range(n_slots)]
        assert unpacked == bits_XL[x].long().tolist()
    assert torch.equal(popcount(words_XW), bits_XL.sum(1))


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=8))
def test_popcount_of_negative_words_counts_the_sign_bit(values):
    words = torch.tensor(values, dtype=torch.int64)
    assert popcount(words) == sum(bin(v & (2**64 - 1)).count("1") for v in values)
