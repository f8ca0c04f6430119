"""A Preprocess from a Hugging Face image processor's settings (preprocessor_config.json), no torchvision.

Covers the processors of the supported families: fixed `size` {height, width} (ViT, SigLIP), shortest edge
then centre crop (CLIP, DINOv2/BiT) and ConvNeXt's `crop_pct` (resize to shortest_edge / crop_pct, then
crop; at 384 and above a plain resize).
"""

from __future__ import annotations

import warnings
from typing import Any

from vitsae.data.preprocess import Preprocess

# PIL resampling codes as stored in preprocessor_config.json
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _hw(size: Any) -> tuple[int, int] | None:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, dict) and "height" in size and "width" in size:
        return (int(size["height"]), int(size["width"]))
    return None


def preprocess_from_hf(settings: dict[str, Any], fallback_size: tuple[int, int]) -> Preprocess:
    """Translate processor `settings`; `fallback_size` (the model's image size) fills what they leave out."""
    resample_code = settings.get("resample", 3)
    resample = _RESAMPLE.get(resample_code)
    if resample is None:
        warnings.warn(f"PIL resample code {resample_code} is not supported; using bicubic", stacklevel=2)
        resample = "bicubic"
    if settings.get("do_normalize", True):
        mean = tuple(float(v) for v in settings.get("image_mean", (0.5, 0.5, 0.5)))
        std = tuple(float(v) for v in settings.get("image_std", (0.5, 0.5, 0.5)))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    size = settings.get("size")
    shortest = size.get("shortest_edge") if isinstance(size, dict) else None
    do_crop = settings.get("do_center_crop")
    if do_crop is None:  # processors that save no `do_center_crop` crop when they have a crop size
        do_crop = settings.get("crop_size") is not None
    crop = _hw(settings.get("crop_size")) if do_crop else None
    if shortest is not None and settings.get("crop_pct") is not None and crop is None:
        if shortest >= 384:
            return Preprocess((shortest, shortest), None, mean, std, resample)
        return Preprocess((shortest, shortest), int(shortest / settings["crop_pct"]), mean, std, resample)
    if shortest is not None:
        return Preprocess(crop or (shortest, shortest), int(shortest), mean, std, resample)
    return Preprocess(_hw(size) or crop or fallback_size, None, mean, std, resample)
