"""Heatmap overlays, patch boxes and crops against hand-computed pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vitsae.analysis.maps import patch_box, upsample_map
from vitsae.report.render import BOX_COLOUR, crop_patch, mark_patch, overlay_heatmap


def test_upsampling_keeps_patch_values_at_patch_centres_and_stays_in_range():
    map_hw = np.arange(12, dtype=np.float32).reshape(3, 4)
    up = upsample_map(map_hw, (12, 9))  # 3x upsampling: pixel 1 + 3i is the centre of patch i
    assert up.shape == (9, 12)
    np.testing.assert_allclose(up[1::3, 1::3], map_hw, atol=1e-5)
    assert up.min() >= 0 and up.max() <= 11 + 1e-5
    between = up[1, 2]  # a third of the way from patch (0, 0) to (0, 1)
    assert between == pytest.approx(1 / 3, abs=1e-5)
    with pytest.raises(ValueError, match=r"2-d \[gh, gw\], got shape \(2, 2, 2\)"):
        upsample_map(np.zeros((2, 2, 2)), (4, 4))


@given(st.integers(1, 9), st.integers(1, 9), st.integers(9, 80), st.integers(9, 80))
def test_patch_boxes_tile_the_image_exactly(grid_h, grid_w, width, height):
    covered = np.zeros((height, width), dtype=int)
    for row in range(grid_h):
        for col in range(grid_w):
            left, top, right, bottom = patch_box(row, col, (grid_h, grid_w), (width, height))
            covered[top:bottom, left:right] += 1
    assert (covered == 1).all()


def test_patch_box_outside_the_grid_is_an_error():
    with pytest.raises(IndexError, match=r"patch \(2, 0\) is outside the 2x3 grid"):
        patch_box(2, 0, (2, 3), (30, 20))


def test_overlay_is_hot_where_the_map_is_and_dim_elsewhere():
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    map_hw = np.zeros((4, 4), dtype=np.float32)
    map_hw[0, 3] = 2.0
    out = np.asarray(overlay_heatmap(image, map_hw, vmax=2.0, size=64), dtype=float)
    hot, cold = out[8, 56], out[56, 8]
    # near the top of inferno (pale yellow) at about 75 % opacity over the dimmed grey (110)
    assert hot[0] > 180 and hot[1] > 180 and hot[2] < hot[0] - 50
    np.testing.assert_allclose(cold, [200 * 0.55] * 3, atol=1)


def test_crops_stay_inside_the_image_and_outline_the_patch():
    pixels = np.full((32, 32, 3), 255, dtype=np.uint8)
    pixels[:8, :8] = (10, 200, 10)  # patch (0, 0) of a 4x4 grid is green
    image = Image.fromarray(pixels)
    crop = np.asarray(crop_patch(image, 0, 0, (4, 4), size=48))
    assert crop.shape == (48, 48, 3)
    # a 24-px window from the corner: the patch fills its top-left third, no blank padding anywhere
    assert (crop[4:12, 4:12] == (10, 200, 10)).all()
    assert not (crop.sum(-1) == 0).any()
    assert (crop[0, 0:16] == BOX_COLOUR).all()

    marked = np.asarray(mark_patch(image, (3, 3), (4, 4), size=32))
    assert (marked[31, 24:32] == BOX_COLOUR).all() and (marked[10, 10] == 255).all()
    assert (np.asarray(mark_patch(image, None, (4, 4), size=32)) == np.asarray(image)).all()
