"""Turn any image PIL can open into 8-bit RGB, or say clearly why not.

Rules (one place, so every source behaves the same):
- EXIF orientation is applied first (the pixels come out the way a viewer shows them).
- Transparency (RGBA, LA, PA, RGBa, palette or greyscale with a transparency key) is composited onto
  white (`ALPHA_BACKGROUND`).
- 16-bit greyscale (I;16*) and 32-bit integer (I, read as 16-bit data, the way PNG and TIFF store it)
  are scaled by 255/65535 after clipping to [0, 65535].
- CMYK (including Adobe CMYK JPEGs, which PIL decodes) and every other mode PIL can convert go through
  `Image.convert("RGB")`.
- Floating-point images (mode F) have no defined intensity range and are refused; so are files PIL
  cannot decode (corrupt, truncated, not an image). Both raise `BadImageError` with the reason.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from vitsae.errors import VitsaeError

ALPHA_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class BadImageError(VitsaeError):
    """An image that cannot be turned into RGB; the message is the reason."""


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert one image file to RGB; `BadImageError` if that fails."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except BadImageError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise BadImageError(f"cannot decode {os.fspath(path)}: {type(err).__name__}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB image from `image` (see the module docstring for the rules)."""
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "F":
        raise BadImageError("floating-point image (mode F) has no defined intensity range")
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        grey = (np.clip(values, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")
    has_key = "transparency" in image.info and mode in ("P", "L", "RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or has_key:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise BadImageError(f"cannot convert mode {mode} to RGB: {err}") from err
