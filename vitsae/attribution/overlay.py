"""Heatmaps as pictures: one overlay PNG per image and method, and a grid of images x methods.

Every map is drawn on one diverging scale (red: raises the target, blue: lowers it), blended over the
greyed image with an opacity that grows with |value|. Signed maps are divided by their largest |value|;
maps with no negative value (saliency, Grad-CAM, RISE) are stretched from their minimum to their maximum,
since RISE's maps sit on a large constant offset (the mean masked score). Each map is scaled on its own:
the pictures compare where, not how much.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitsae.fileio import write_bytes_atomic

ALPHA = 0.55  # weight of the heatmap over the greyed image


def _scaled(map_HW: np.ndarray) -> np.ndarray:
    """The map in [-1, 1] (signed maps) or [0, 1] (maps with no negative value)."""
    if float(map_HW.min()) >= 0:
        map_HW = map_HW - map_HW.min()
    peak = float(np.abs(map_HW).max())
    return map_HW / peak if peak > 0 else np.zeros_like(map_HW)


def overlay(image_HWC: np.ndarray, map_HW: np.ndarray) -> np.ndarray:
    """The map on a diverging colour scale blended over the greyed image (uint8 (H, W, 3))."""
    from matplotlib import colormaps

    scaled = _scaled(map_HW)
    colours = colormaps["RdBu_r"]((scaled + 1) / 2)[..., :3]
    grey = image_HWC.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    weight = ALPHA * np.abs(scaled)[..., None]
    blended = (1 - weight) * grey + weight * colours
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_overlay(path: str | Path, image_HWC: np.ndarray, map_HW: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(overlay(image_HWC, map_HW)).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def save_grid(
    path: str | Path,
    images_NHWC: np.ndarray,
    maps: dict[str, np.ndarray],
    row_titles: Sequence[str],
    title: str = "",
) -> None:
    """A PNG grid: one row per image (the image, then each method's overlay), methods as column titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    rows, cols = len(images_NHWC), len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images_NHWC[r], interpolation="nearest")
        axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(overlay(images_NHWC[r], maps[name][r]), interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
