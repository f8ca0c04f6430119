"""Which tokens of a hook an SAE or an edit touches: token kinds, a boolean patch mask, or an image box.

A hook's token axis is `[CLS...][registers...][patches row-major]` (`TokenLayout`). A selection names
token kinds (`cls`, `registers`, `patches`, or `all` for every kind) and, for patches, optionally a
mask over the patch grid; an image box (x0, y0, x1, y1) in the model's input pixels selects the patches
whose centre lies inside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from vitsae.errors import VitsaeError
from vitsae.tokens import TokenLayout

TOKEN_KINDS: tuple[str, ...] = ("cls", "registers", "patches")


class SelectionError(VitsaeError):
    """A token selection that does not fit the hook (unknown kind, a kind the SAE was not trained on, ...)."""


def parse_kinds(text: str | Iterable[str]) -> frozenset[str]:
    """`"all"`, `"patches"`, `"cls+patches"` (or an iterable of kinds) -> a set of token kinds."""
    parts = text.split("+") if isinstance(text, str) else list(text)
    kinds: set[str] = set()
    for part in parts:
        part = part.strip()
        if part == "all":
            kinds.update(TOKEN_KINDS)
        elif part in TOKEN_KINDS:
            kinds.add(part)
        else:
            raise SelectionError(
                f"unknown token kind {part!r}; valid: all, {', '.join(TOKEN_KINDS)} (join several with '+')"
            )
    return frozenset(kinds)


def kinds_name(kinds: frozenset[str]) -> str:
    """The canonical text of a set of token kinds (`all` when every kind)."""
    return "all" if kinds == frozenset(TOKEN_KINDS) else "+".join(k for k in TOKEN_KINDS if k in kinds)


def token_kind_mask(layout: TokenLayout, n_tokens: int, kinds: frozenset[str]) -> torch.Tensor:
    """Bool [T] marking the tokens of the given kinds on a hook with `n_tokens` tokens.

    `n_tokens` may differ from the layout's own count when the image size differs: the prefix stays, the
    rest are patches.
    """
    if n_tokens < layout.n_prefix:
        raise SelectionError(
            f"a hook with {n_tokens} tokens cannot hold the layout's {layout.n_prefix} prefix"
        )
    mask = torch.zeros(n_tokens, dtype=torch.bool)
    if "cls" in kinds:
        mask[: layout.n_cls] = True
    if "registers" in kinds:
        mask[layout.n_cls : layout.n_prefix] = True
    if "patches" in kinds:
        mask[layout.n_prefix :] = True
    return mask


def box_patch_mask(
    layout: TokenLayout, box: tuple[float, float, float, float], image_hw: tuple[int, int]
) -> torch.Tensor:
    """Bool [grid_h, grid_w]: the patches whose centre lies in the box (x0, y0, x1, y1) of the input image."""
    if layout.grid_hw is None:
        raise SelectionError("an image box needs patch tokens, but this hook has no patch grid")
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise SelectionError(f"box {tuple(box)} is empty: expected x0 < x1 and y0 < y1 (input pixels)")
    grid_h, grid_w = layout.grid_hw
    centre_y = (torch.arange(grid_h, dtype=torch.float64) + 0.5) * image_hw[0] / grid_h
    centre_x = (torch.arange(grid_w, dtype=torch.float64) + 0.5) * image_hw[1] / grid_w
    inside_y = (centre_y >= y0) & (centre_y < y1)
    inside_x = (centre_x >= x0) & (centre_x < x1)
    mask = inside_y[:, None] & inside_x[None, :]
    if not mask.any():
        raise SelectionError(
            f"box {tuple(box)} covers no patch centre of the {grid_h}x{grid_w} grid over a "
            f"{image_hw[1]}x{image_hw[0]} (WxH) input image"
        )
    return mask
