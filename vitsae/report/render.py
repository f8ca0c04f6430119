"""The browser's only pictures: one JPEG thumbnail per distinct image, plus the heatmap colour table.

Each thumbnail is the image as the model saw it (its preprocessing's resize and crop, so the token grid
lines up with the pixels), shared by every feature and image page that shows the image; heatmaps, patch
crops and marks are drawn over it in the page (canvas) from the numbers in the page data.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def inferno_lut() -> bytes:
    """A 256-entry RGB colour table (matplotlib's inferno) for heatmaps: 768 bytes."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8).tobytes()


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """The image at `size`x`size` (RGB, bicubic)."""
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def save_jpeg(picture: Image.Image, path: Path, quality: int = 85) -> None:
    """Plain write: the browser is built in a scratch folder that is renamed into place when complete."""
    picture.save(path, format="JPEG", quality=quality)
