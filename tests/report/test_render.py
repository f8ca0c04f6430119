"""Map upsampling and patch boxes against hand-computed pixels (the page draws with the same rules), and
the thumbnails and colour table the browser ships."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vitsae.analysis.maps import patch_box, upsample_map
from vitsae.report.render import inferno_lut, thumbnail


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


def test_thumbnails_are_square_rgb_and_the_colour_table_runs_dark_to_bright():
    grey = Image.new("L", (50, 30), 128)
    thumb = thumbnail(grey, 24)
    assert thumb.mode == "RGB" and thumb.size == (24, 24)
    assert np.asarray(thumb).min() == np.asarray(thumb).max() == 128
    table = np.frombuffer(inferno_lut(), dtype=np.uint8).reshape(256, 3)
    brightness = table.astype(int).sum(1)
    assert brightness[0] < 40 and brightness[-1] > 600 and (np.diff(brightness) >= -2).all()
