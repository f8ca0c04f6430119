"""Opening what an attribution run needs from its spec strings, shared by `vitsae attribute` and
`vitsae faithfulness`: the model, the image source and its class names, the SAE, the target function."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitsae.attribution.targets import Target, TargetFunction
from vitsae.data.loader import ImageBatch, ImageLoader
from vitsae.data.open import open_source
from vitsae.data.sources import ImageSource
from vitsae.errors import VitsaeError
from vitsae.models.load import load
from vitsae.models.protocol import HookedModel
from vitsae.sae.io import load_sae
from vitsae.sae.provenance import check_sae_model


@dataclass
class Setup:
    """A model with its target function over an image slice."""

    model: HookedModel
    source: ImageSource
    class_names: list[str] | None
    fn: TargetFunction
    start: int
    stop: int


def open_setup(
    model_spec: str,
    source_spec: str,
    target_spec: str,
    sae_dir: Path | None = None,
    start: int = 0,
    n_images: int = 0,
    device: str = "cpu",
    allow_other_model: bool = False,
) -> Setup:
    """Load the model, source and SAE named by the specs (the SAE checked against the model: an SAE
    trained on another model is refused unless `allow_other_model`)."""
    model = load(model_spec, device=device)
    source = open_source(source_spec)
    sae = None if sae_dir is None else load_sae(sae_dir, device=device)
    if sae is not None:
        check_sae_model({str(sae_dir): sae.cfg}, model, model_spec, allow_other_model)
    for param in model.parameters():
        param.requires_grad_(False)  # gradients flow to the pixels only
    stop = len(source) if n_images == 0 else start + n_images
    if not 0 <= start < stop <= len(source):
        raise VitsaeError(
            f"images [{start}, {stop}) are not within the source's {len(source)} images; lower --start or "
            "--n-images"
        )
    classes = source.describe().get("classes") or None
    target = Target.parse(target_spec, classes)
    fn = TargetFunction(model, target, sae=sae)
    return Setup(model, source, classes, fn, start, stop)


def batches(setup: Setup, batch_size: int) -> Iterator[ImageBatch]:
    """Preprocessed batches of the setup's slice, in source order."""
    loader = ImageLoader(setup.source, setup.model.preprocess, batch_size, start=setup.start, stop=setup.stop)
    param = next(setup.model.parameters())
    for batch in loader:
        batch.pixels_BCHW = batch.pixels_BCHW.to(device=param.device, dtype=param.dtype)
        yield batch


def display_images(setup: Setup, indices: list[int]) -> np.ndarray:
    """The images at `indices` as the model sees them (resized and cropped), uint8 (N, H, W, 3)."""
    preprocess = setup.model.preprocess
    return np.stack([np.asarray(preprocess.resize_crop(setup.source[i].image)) for i in indices])


def to_cpu_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float32)
