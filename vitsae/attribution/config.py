"""The options of attribution: `MethodConfig` (how each method runs) and `AttributeConfig` (one
`vitsae attribute` run: model, images, target, methods, output). Both own their command-line flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitsae.attribution.substrates import SUBSTRATES, Substrate
from vitsae.attribution.targets import TARGET_SPECS
from vitsae.errors import VitsaeError
from vitsae.sae.provenance import ALLOW_HELP

BASE_METHODS = ("saliency", "gradxinput", "ig", "gradcam", "occlusion", "rise")
SMOOTHABLE = ("saliency", "gradxinput", "ig", "gradcam")
METHODS = BASE_METHODS + tuple(f"smoothgrad:{name}" for name in SMOOTHABLE)


class ConfigError(VitsaeError):
    """An attribution option out of its range or not among its choices."""


def check_method(name: str) -> str:
    """`name` if it is a method (`smoothgrad:<base>` wraps a gradient method), else a one-line error."""
    if name not in METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; valid: {', '.join(METHODS)}")
    return name


@dataclass(frozen=True)
class MethodConfig:
    """How the methods run (each method reads only its own fields)."""

    baseline: Substrate = field(
        default="zero",
        metadata={"help": "what removed pixels become: IG baseline, occlusion and RISE fill (zero = black)"},
    )
    ig_steps: int = field(default=64, metadata={"help": "integrated gradients: path steps (Gauss-Legendre)"})
    ig_internal_batch_size: int = field(
        default=64,
        metadata={"help": "integrated gradients: images per forward/backward; lower it to fit in memory"},
    )
    smoothgrad_samples: int = field(default=16, metadata={"help": "SmoothGrad: noisy copies per image"})
    smoothgrad_noise: float = field(
        default=0.15, metadata={"help": "SmoothGrad: noise std as a fraction of the input's value range"}
    )
    gradcam_hook: str = field(
        default="",
        metadata={"help": "Grad-CAM hook (default: the last hook with a patch grid up to the target's hook)"},
    )
    occlusion_window: int = field(
        default=0, metadata={"help": "occlusion: square window and stride in pixels (0: the model's patch)"}
    )
    rise_masks: int = field(default=1000, metadata={"help": "RISE: random masks per image"})
    rise_cells: int = field(default=8, metadata={"help": "RISE: mask grid cells per side"})
    rise_keep: float = field(default=0.5, metadata={"help": "RISE: probability that a cell is kept"})
    perturbation_batch_size: int = field(
        default=128, metadata={"help": "occlusion and RISE: perturbed images per forward"}
    )
    seed: int = field(default=0, metadata={"help": "seed of SmoothGrad noise, RISE masks and noise fills"})

    def __post_init__(self) -> None:
        if self.baseline not in SUBSTRATES:
            raise ConfigError(f"unknown baseline {self.baseline!r}; valid: {', '.join(SUBSTRATES)}")
        counts = {
            "ig_steps": self.ig_steps,
            "ig_internal_batch_size": self.ig_internal_batch_size,
            "smoothgrad_samples": self.smoothgrad_samples,
            "rise_masks": self.rise_masks,
            "rise_cells": self.rise_cells,
            "perturbation_batch_size": self.perturbation_batch_size,
        }
        bad = [f"{name}={value}" for name, value in counts.items() if value < 1]
        if bad or self.occlusion_window < 0:
            raise ConfigError(f"{', '.join(bad) or 'occlusion_window'} must be >= 1 (occlusion_window >= 0)")
        if not 0.0 < self.rise_keep < 1.0:
            raise ConfigError(f"rise_keep must be in (0, 1), got {self.rise_keep}")
        if self.smoothgrad_noise <= 0:
            raise ConfigError(f"smoothgrad_noise must be > 0, got {self.smoothgrad_noise}")


@dataclass(frozen=True)
class AttributeConfig:
    """One `vitsae attribute` run: heatmaps of one target by several methods over an image source."""

    model: str = field(metadata={"help": "model spec: hf:<dir>, timm:<dir>, vitsae:<name>, module:<path:fn>"})
    source: str = field(metadata={"help": "images: shapes:<n>[:seed[:size]], folder:<dir>, hf:<dir>, ..."})
    target: str = field(metadata={"help": f"the scalar explained: {', '.join(TARGET_SPECS)}"})
    out: Path = field(metadata={"help": "output directory"})
    methods: tuple[str, ...] = field(
        default=("saliency", "gradxinput", "ig", "gradcam", "occlusion", "rise"),
        metadata={"help": f"methods, from: {', '.join(METHODS)}"},
    )
    sae: Path | None = field(default=None, metadata={"help": "SAE run directory (feature targets)"})
    start: int = field(default=0, metadata={"help": "first image index of the source"})
    n_images: int = field(default=0, metadata={"help": "images from `start` (0: to the end)"})
    batch_size: int = field(default=16, metadata={"help": "images attributed together"})
    n_overlays: int = field(default=8, metadata={"help": "images drawn in grid.png and as overlay PNGs"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})

    def __post_init__(self) -> None:
        for name in self.methods:
            check_method(name)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods must be given once each, got {list(self.methods)}")
        if self.start < 0 or self.n_images < 0 or self.batch_size < 1 or self.n_overlays < 0:
            raise ConfigError(
                f"need start >= 0, n_images >= 0, batch_size >= 1, n_overlays >= 0; got {self.start}, "
                f"{self.n_images}, {self.batch_size}, {self.n_overlays}"
            )
