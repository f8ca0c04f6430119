"""The thumbnails and colour table the browser ships (the pages draw heatmaps themselves, on canvas)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vitsae.report.render import inferno_lut, thumbnail


def test_thumbnails_are_square_rgb_and_the_colour_table_runs_dark_to_bright():
    grey = Image.new("L", (50, 30), 128)
    thumb = thumbnail(grey, 24)
    assert thumb.mode == "RGB" and thumb.size == (24, 24)
    assert np.asarray(thumb).min() == np.asarray(thumb).max() == 128
    table = np.frombuffer(inferno_lut(), dtype=np.uint8).reshape(256, 3)
    brightness = table.astype(int).sum(1)
    assert brightness[0] < 40 and brightness[-1] > 600 and (np.diff(brightness) >= -2).all()
