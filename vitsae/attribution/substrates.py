"""What replaces pixels that a method or metric removes: the baseline of integrated gradients, the fill of
occlusion and RISE, and the substrate of deletion/insertion curves are the same few choices.

Each is defined on pixel values and returned in the model's normalised units (the model's `Preprocess`
mean/std), so "zero" is a black image whatever the normalisation:

- `zero`: black pixels;
- `mean`: every pixel set to the image's own mean colour;
- `blur`: the image under a Gaussian blur of standard deviation side/16 (Petsiuk et al. 2018 insert into a
  blurred image);
- `noise`: uniform noise in [0, 1] per pixel and channel, from a seeded generator.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from vitsae.data.preprocess import Preprocess
from vitsae.errors import InvalidValue

Substrate = Literal["zero", "mean", "blur", "noise"]
SUBSTRATES: tuple[str, ...] = ("zero", "mean", "blur", "noise")


def _mean_std(preprocess: Preprocess, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(preprocess.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return mean, std


def gaussian_blur(pixels_BCHW: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur with reflected borders (kernel radius 3 sigma, capped by the image)."""
    radius = min(max(1, math.ceil(3 * sigma)), min(pixels_BCHW.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=pixels_BCHW.dtype, device=pixels_BCHW.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = pixels_BCHW.shape[1]
    padded = F.pad(pixels_BCHW, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def substrate(
    kind: str,
    pixels_BCHW: torch.Tensor,
    preprocess: Preprocess,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The substrate `kind` for normalised `pixels_BCHW`, in normalised units, same shape."""
    mean, std = _mean_std(preprocess, pixels_BCHW)
    if kind == "zero":
        return ((0.0 - mean) / std).expand_as(pixels_BCHW).clone()
    if kind == "mean":
        return pixels_BCHW.mean(dim=(2, 3), keepdim=True).expand_as(pixels_BCHW).clone()
    if kind == "blur":
        return gaussian_blur(pixels_BCHW, sigma=max(1.0, min(pixels_BCHW.shape[-2:]) / 16))
    if kind == "noise":
        noise = torch.rand(pixels_BCHW.shape, generator=generator, dtype=pixels_BCHW.dtype)
        return (noise.to(pixels_BCHW.device) - mean) / std
    raise InvalidValue(f"unknown substrate {kind!r}; valid: {', '.join(SUBSTRATES)}")
