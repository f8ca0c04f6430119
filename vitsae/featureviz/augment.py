"""The random transforms applied before every optimisation step, then the model's own preprocessing.

A feature visualisation that only works for one exact pixel grid is an adversarial pattern, not a picture of
what the feature responds to; small random shifts, scalings, rotations, padding and noise at every step
make the optimised image robust to them (Mordvintsev et al. 2015; Olah et al. 2017). All randomness comes
from one `torch.Generator`, so a seeded run repeats exactly on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vitsae.data.preprocess import Preprocess


@dataclass(frozen=True)
class Augment:
    """Transform strengths; zero turns each one off."""

    pad: int = 4  # pixels of mid-grey padding around the image
    jitter: int = 4  # largest random shift in pixels
    scale: float = 0.1  # random zoom in [1 - scale, 1 + scale]
    rotate: float = 5.0  # largest random rotation in degrees
    noise: float = 0.02  # std of added Gaussian pixel noise

    def __call__(self, images_B3HW: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        B = images_B3HW.shape[0]
        if self.pad:
            images_B3HW = F.pad(images_B3HW, (self.pad,) * 4, value=0.5)
        theta_B23 = _random_affine(B, self.jitter, images_B3HW.shape[-1], self.scale, self.rotate, generator)
        if theta_B23 is not None:
            grid = F.affine_grid(theta_B23.to(images_B3HW), list(images_B3HW.shape), align_corners=False)
            images_B3HW = F.grid_sample(images_B3HW, grid, padding_mode="reflection", align_corners=False)
        if self.noise:
            images_B3HW = images_B3HW + self.noise * torch.randn(images_B3HW.shape, generator=generator)
        return images_B3HW


def _random_affine(
    batch: int, jitter: int, width: int, scale: float, rotate: float, generator: torch.Generator
) -> torch.Tensor | None:
    """Per-image affine matrices (normalised coordinates) for shift, zoom and rotation, or None if none."""
    if not (jitter or scale or rotate):
        return None

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    zoom = uniform(1 - scale, 1 + scale)
    angle = uniform(-rotate, rotate) * math.pi / 180
    shift = uniform(-jitter, jitter) * 2 / width, uniform(-jitter, jitter) * 2 / width
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)


def to_model_input(images_B3HW: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """RGB images in [0, 1] of any size -> the model's input: resized to its size, normalised its way."""
    if tuple(images_B3HW.shape[-2:]) != tuple(preprocess.size):
        images_B3HW = F.interpolate(images_B3HW, size=preprocess.size, mode="bilinear", align_corners=False)
    mean = torch.tensor(preprocess.mean, dtype=images_B3HW.dtype)[:, None, None]
    std = torch.tensor(preprocess.std, dtype=images_B3HW.dtype)[:, None, None]
    return (images_B3HW - mean) / std
