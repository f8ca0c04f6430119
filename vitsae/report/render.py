"""Pre-rendered pictures for the browser: heatmap overlays, patch crops and marked patches (PIL only).

Every picture starts from the image as the model saw it (its preprocessing's resize and crop, so the
token grid lines up with the pixels) and is written as a JPEG.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vitsae.analysis.maps import patch_box, upsample_map

HEAT_COLOUR = (255, 60, 0)
BOX_COLOUR = (0, 230, 255)


@lru_cache(maxsize=1)
def _inferno_lut() -> np.ndarray:
    """A 256-entry RGB colour table (matplotlib's inferno) for heatmaps."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def dimmed_thumbnail(image: Image.Image, size: int) -> np.ndarray:
    """The image at `size`x`size`, darkened so a heatmap stands out: float32 [size, size, 3]."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float32) * 0.55


def blend_heatmap(dimmed_HWC: np.ndarray, map_hw: np.ndarray, vmax: float) -> Image.Image:
    """A map (scaled by `vmax`) upsampled to the thumbnail and blended over it (inferno, opacity ~ sqrt)."""
    height, width, _ = dimmed_HWC.shape
    heat = np.clip(upsample_map(map_hw, (width, height)) / max(vmax, 1e-12), 0.0, 1.0)
    colours = _inferno_lut()[np.round(heat * 255).astype(np.int64)]
    alpha = (0.75 * np.sqrt(heat))[..., None]
    blended = dimmed_HWC * (1 - alpha) + colours * alpha
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def overlay_heatmap(image: Image.Image, map_hw: np.ndarray, vmax: float, size: int) -> Image.Image:
    """The image at `size`x`size` with the map (scaled by `vmax`) upsampled and blended over it."""
    return blend_heatmap(dimmed_thumbnail(image, size), map_hw, vmax)


def crop_patch(
    image: Image.Image, row: int, col: int, grid_hw: tuple[int, int], size: int, context: float = 1.0
) -> Image.Image:
    """Patch (row, col) with `context` patches of surroundings, upscaled to `size`, outlined.

    The window is shifted to stay inside the image, so a border patch sits off-centre rather than
    next to blank padding.
    """
    left, top, right, bottom = patch_box(row, col, grid_hw, image.size)
    width, height = image.size
    win_w = min(width, round((right - left) * (1 + 2 * context)))
    win_h = min(height, round((bottom - top) * (1 + 2 * context)))
    x0 = min(max(0, (left + right - win_w) // 2), width - win_w)
    y0 = min(max(0, (top + bottom - win_h) // 2), height - win_h)
    crop_box = (x0, y0, x0 + win_w, y0 + win_h)
    crop = image.convert("RGB").crop(crop_box).resize((size, size), Image.Resampling.NEAREST)
    scale_x, scale_y = size / (crop_box[2] - crop_box[0]), size / (crop_box[3] - crop_box[1])
    outline = (
        (left - crop_box[0]) * scale_x,
        (top - crop_box[1]) * scale_y,
        (right - crop_box[0]) * scale_x - 1,
        (bottom - crop_box[1]) * scale_y - 1,
    )
    ImageDraw.Draw(crop).rectangle(outline, outline=BOX_COLOUR, width=max(1, size // 48))
    return crop


def mark_patch(
    image: Image.Image, patch: tuple[int, int] | None, grid_hw: tuple[int, int], size: int
) -> Image.Image:
    """The image at `size`x`size` with one patch outlined (none for a class or register token)."""
    thumb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    if patch is not None:
        box = patch_box(patch[0], patch[1], grid_hw, thumb.size)
        ImageDraw.Draw(thumb).rectangle(
            (box[0], box[1], box[2] - 1, box[3] - 1), outline=BOX_COLOUR, width=max(1, size // 64)
        )
    return thumb


def save_jpeg(picture: Image.Image, path: Path, quality: int = 85) -> None:
    """Plain write: the browser is built in a scratch folder that is renamed into place when complete."""
    picture.save(path, format="JPEG", quality=quality)
