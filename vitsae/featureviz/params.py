"""Image parametrisations: what the optimiser changes, and how it becomes an RGB image in [0, 1].

- `PixelImage`: one free value per pixel and channel through a sigmoid (Simonyan et al. 2014); total
  variation and L2 penalties (in the optimiser) keep it from turning into high-frequency noise.
- `FourierImage`: the image's 2-D spectrum, scaled by 1/f so every frequency band moves at a similar rate,
  with colours mixed by the square root of the RGB covariance (Olah et al. 2017, "Feature Visualization";
  the Lucid/Lucent parametrisation). The covariance comes from the user's images, not a stored constant.
- `MacoImage`: only the phase of the spectrum is free; its magnitude is fixed to the mean magnitude spectrum
  of real images (Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with MAgnitude
  Constrained Optimization"), so the result keeps natural-image statistics.

`ImageStatistics` holds what the last two need from real images: the per-channel magnitude spectrum, the
colour square root and the channel means, measured on a local image source, or an analytic 1/f^alpha
fallback when none is given. Nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.errors import VitsaeError


class ImageStatisticsError(VitsaeError):
    """The images meant to give the spectrum and colour statistics cannot give them."""


def _frequencies(height: int, width: int) -> torch.Tensor:
    """|f| of every rfft2 bin, in cycles per pixel: (H, W//2 + 1)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


@dataclass(frozen=True, eq=False)
class ImageStatistics:
    """Natural-image statistics at one size: magnitude spectrum (3, H, W//2+1), colour sqrt (3, 3), means."""

    magnitude_CHF: torch.Tensor
    colour_sqrt_CC: torch.Tensor
    mean_C: torch.Tensor
    source: str

    @property
    def size(self) -> tuple[int, int]:
        return self.magnitude_CHF.shape[1], 2 * (self.magnitude_CHF.shape[2] - 1)

    @classmethod
    def power_law(cls, height: int, width: int, alpha: float = 1.0) -> ImageStatistics:
        """The analytic fallback: magnitude 1/f^alpha (zero at f = 0), uncorrelated colours, mean grey."""
        freq_HF = _frequencies(height, width)
        magnitude_HF = torch.where(freq_HF > 0, freq_HF.clamp_min(1e-12) ** -alpha, torch.zeros(()))
        return cls(
            magnitude_CHF=(magnitude_HF / magnitude_HF.norm()).expand(3, -1, -1).clone(),
            colour_sqrt_CC=torch.eye(3),
            mean_C=torch.full((3,), 0.5),
            source=f"power law 1/f^{alpha}",
        )

    @classmethod
    def from_source(
        cls, source: ImageSource, size: tuple[int, int], n_images: int = 256, name: str = ""
    ) -> ImageStatistics:
        """Mean magnitude spectrum, RGB covariance and means of up to `n_images` images of `source`."""
        if len(source) == 0:
            raise ImageStatisticsError(
                f"{name or 'the spectrum source'} holds no images; give a source with images "
                "(e.g. shapes:256 or a folder) or leave it empty for the 1/f fallback"
            )
        height, width = size
        geometry = Preprocess(size=size)
        magnitude_CHF = torch.zeros(3, height, width // 2 + 1, dtype=torch.float64)
        moment_CC = torch.zeros(3, 3, dtype=torch.float64)
        sum_C = torch.zeros(3, dtype=torch.float64)
        count = min(n_images, len(source))
        for index in range(count):
            image = source[index].image.convert("RGB")
            pixels = np.asarray(geometry.resize_crop(image), dtype=np.float64) / 255.0
            pixels_CHW = torch.from_numpy(pixels).permute(2, 0, 1)
            centred_CHW = pixels_CHW - pixels_CHW.mean(dim=(1, 2), keepdim=True)
            magnitude_CHF += torch.fft.rfft2(centred_CHW, norm="ortho").abs()
            flat_CN = pixels_CHW.reshape(3, -1)
            sum_C += flat_CN.mean(1)
            moment_CC += centred_CHW.reshape(3, -1) @ centred_CHW.reshape(3, -1).T / flat_CN.shape[1]
        magnitude_CHF /= count
        magnitude_CHF[:, 0, 0] = 0.0
        eigenvalues, eigenvectors = torch.linalg.eigh(moment_CC / count)
        colour_sqrt_CC = eigenvectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
        colour_sqrt_CC /= colour_sqrt_CC.norm(dim=0).max().clamp_min(1e-12)
        return cls(
            magnitude_CHF=(magnitude_CHF / magnitude_CHF.norm()).float(),
            colour_sqrt_CC=colour_sqrt_CC.float(),
            mean_C=(sum_C / count).float(),
            source=name or "images",
        )


class ImageParam(nn.Module):
    """A batch of images `(B, 3, H, W)` in [0, 1], produced from free parameters by `forward()`."""

    def __init__(self, batch: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.batch, self.size = batch, size


class PixelImage(ImageParam):
    """Free pixels through a sigmoid, started at mid grey with a little noise."""

    def __init__(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> None:
        super().__init__(batch, size)
        self.logits_B3HW = nn.Parameter(0.1 * torch.randn(batch, 3, *size, generator=generator))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits_B3HW)


class FourierImage(ImageParam):
    """A 1/f-scaled spectrum with decorrelated colours (Lucid's parametrisation)."""

    def __init__(
        self,
        batch: int,
        size: tuple[int, int],
        statistics: ImageStatistics,
        generator: torch.Generator,
        decay_power: float = 1.0,
    ) -> None:
        super().__init__(batch, size)
        height, width = size
        freq_HF = _frequencies(height, width).clamp_min(1.0 / max(height, width))
        self.register_buffer("scale_HF", freq_HF**-decay_power / 4)
        self.register_buffer("colour_sqrt_CC", statistics.colour_sqrt_CC.clone())
        self.register_buffer("offset_C", torch.logit(statistics.mean_C.clamp(0.05, 0.95)))
        shape = (batch, 3, height, width // 2 + 1, 2)
        self.spectrum = nn.Parameter(0.01 * torch.randn(shape, generator=generator))

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale_HF
        decorrelated_B3HW = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        rgb_B3HW = torch.einsum("cd,bdhw->bchw", self.colour_sqrt_CC, decorrelated_B3HW)
        return torch.sigmoid(rgb_B3HW + self.offset_C[:, None, None])


class MacoImage(ImageParam):
    """A free phase under the fixed magnitude spectrum of real images (MACO).

    The spatial image is standardised per channel, then mapped into [0, 1] by a sigmoid centred on the
    source's channel means, so only the phase (where structure sits) is optimised.
    """

    def __init__(
        self, batch: int, size: tuple[int, int], statistics: ImageStatistics, generator: torch.Generator
    ) -> None:
        super().__init__(batch, size)
        if statistics.size != tuple(size):
            raise ImageStatisticsError(
                f"the magnitude spectrum was measured at {statistics.size}, the images are {tuple(size)}"
            )
        height, width = size
        self.register_buffer("magnitude_CHF", statistics.magnitude_CHF.clone())
        self.register_buffer("offset_C", torch.logit(statistics.mean_C.clamp(0.05, 0.95)))
        phase = (torch.rand(batch, 3, height, width // 2 + 1, generator=generator) * 2 - 1) * math.pi
        self.phase_B3HF = nn.Parameter(phase)

    def spatial(self) -> torch.Tensor:
        """The image before standardisation: its spectrum's magnitude is exactly `magnitude_CHF`."""
        spectrum = self.magnitude_CHF * torch.exp(1j * self.phase_B3HF)
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho")

    def forward(self) -> torch.Tensor:
        spatial_B3HW = self.spatial()
        mean = spatial_B3HW.mean(dim=(2, 3), keepdim=True)
        std = spatial_B3HW.std(dim=(2, 3), keepdim=True).clamp_min(1e-8)
        return torch.sigmoid((spatial_B3HW - mean) / std + self.offset_C[:, None, None])
