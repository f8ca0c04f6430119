"""VisualizeConfig: everything `vitsae visualize` needs, and the choices it checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitsae.errors import InvalidValue
from vitsae.featureviz.objectives import REDUCTIONS, Reduce
from vitsae.sae.provenance import ALLOW_HELP

Method = Literal["fourier", "maco", "pixel", "vital"]
METHODS: tuple[str, ...] = ("fourier", "maco", "pixel", "vital")
Target = Literal["feature", "neuron", "decoder", "class"]
TARGETS: tuple[str, ...] = ("feature", "neuron", "decoder", "class")


@dataclass(frozen=True)
class VisualizeConfig:
    """Which targets to visualise, how the images are parametrised and optimised, and where they go."""

    model: str = field(metadata={"help": "model spec: hf:<dir>, vitsae:<name>, module:<path:factory>"})
    out: Path = field(metadata={"help": "output folder (featureviz.json, featureviz.safetensors, images/)"})
    sae: Path | None = field(
        default=None,
        metadata={"help": "SAE run folder (targets 'feature' and 'decoder'); its hook is the site"},
    )
    hook: str = field(default="", metadata={"help": "hook of neuron targets (default: the SAE's hook)"})
    target: Target = field(
        default="feature",
        metadata={
            "help": "feature: SAE feature; neuron: a unit/channel of the hook; decoder: cosine with a "
            "decoder row; class: a class logit"
        },
    )
    features: str = field(
        default="top:8",
        metadata={
            "help": "targets: indices '1,5,9', class names 'round-warm,round-cool', or 'top:N' (the N "
            "targets with the highest mean value on the reference images)"
        },
    )
    reduce: Reduce = field(
        default="mean", metadata={"help": "tokens to one number: mean/max over patches, cls, or one patch"}
    )
    patch: tuple[int, int] = field(
        default=(0, 0), metadata={"help": "(row, col) of the patch for --reduce patch"}
    )
    method: Method = field(
        default="fourier",
        metadata={
            "help": "fourier: decorrelated 1/f spectrum; maco: phase only under a fixed magnitude; pixel: "
            "free pixels with TV/L2; vital: fourier matching the target's patch distribution on real images"
        },
    )
    steps: int = field(default=256, metadata={"help": "optimisation steps"})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate"})
    samples: int = field(default=1, metadata={"help": "images per target (diverse with --diversity)"})
    diversity: float = field(
        default=0.0, metadata={"help": "weight of the diversity term among a target's samples"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "images optimised together (several targets per batch)"}
    )
    tv: float = field(default=0.05, metadata={"help": "total-variation weight (pixel method)"})
    l2: float = field(default=0.01, metadata={"help": "L2-around-grey weight (pixel method)"})
    image_size: int = field(
        default=0, metadata={"help": "side of the optimised image (default: the model's)"}
    )
    reference_source: str = field(
        default="",
        metadata={
            "help": "real images to compare with (top:N, the ratio to the dataset maximum, vital), e.g. "
            "shapes:512 or a folder"
        },
    )
    reference_images: int = field(default=512, metadata={"help": "reference images read at most"})
    spectrum_source: str = field(
        default="",
        metadata={"help": "images for the spectrum and colours (default: the reference source, else 1/f)"},
    )
    spectrum_images: int = field(default=128, metadata={"help": "spectrum-source images read at most"})
    jitter: int = field(default=4, metadata={"help": "largest random shift (pixels)"})
    scale: float = field(default=0.1, metadata={"help": "random zoom range (1 +- scale)"})
    rotate: float = field(default=5.0, metadata={"help": "largest random rotation (degrees)"})
    pad: int = field(default=4, metadata={"help": "grey padding before the transforms (pixels)"})
    noise: float = field(default=0.02, metadata={"help": "Gaussian pixel noise std"})
    seed: int = field(default=0, metadata={"help": "random seed (parameters and transforms)"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidValue(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.target not in TARGETS:
            raise InvalidValue(f"unknown target {self.target!r}; valid: {', '.join(TARGETS)}")
        if self.reduce not in REDUCTIONS:
            raise InvalidValue(f"unknown reduction {self.reduce!r}; valid: {', '.join(REDUCTIONS)}")
        for name in ("steps", "samples", "batch_size", "reference_images", "spectrum_images"):
            if getattr(self, name) < 1:
                raise InvalidValue(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InvalidValue(f"lr must be > 0, got {self.lr}")
        if self.image_size < 0:
            raise InvalidValue(f"image_size must be >= 0 (0: the model's size), got {self.image_size}")
        if self.target in ("feature", "decoder") and self.sae is None:
            raise InvalidValue(f"target {self.target!r} needs --sae RUN_DIR")
        if self.method == "vital" and not self.reference_source:
            raise InvalidValue("method 'vital' matches real images: give --reference-source")
