"""The preprocessing a model expects, carried with the model so later stages need not guess.

One path for every source: convert to RGB, resize (straight to the model size, or shortest edge
then centre-crop), scale to [0, 1], normalise with the model's mean/std. No torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from vitsae.config import check_choices
from vitsae.errors import InvalidValue

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass(frozen=True)
class Preprocess:
    """How to turn an image into the model's input tensor."""

    size: tuple[int, int]  # (H, W) of the model input
    resize_shortest_edge: int | None = None  # set: resize shortest edge to this, then centre-crop to `size`
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: Literal["nearest", "bilinear", "bicubic"] = "bicubic"

    def __post_init__(self) -> None:
        check_choices(self)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Resize and crop an RGB image to `size` (the geometry step alone, for overlays)."""
        height, width = self.size
        resample = _RESAMPLE[self.resample]
        if self.resize_shortest_edge is None:
            return image.resize((width, height), resample)
        w, h = image.size
        scale = self.resize_shortest_edge / min(w, h)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        image = image.resize((new_w, new_h), resample)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return image.crop((left, top, left + width, top + height))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """An RGB PIL image -> normalised float32 tensor (3, H, W)."""
        if image.mode != "RGB":
            raise InvalidValue(f"Preprocess expects an RGB image, got mode {image.mode!r}; convert it first")
        pixels_HWC = np.asarray(self.resize_crop(image), dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(((pixels_HWC - mean) / std).transpose(2, 0, 1).copy())
