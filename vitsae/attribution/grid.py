"""The token-grid glue: any hook with a patch grid seen as a (B, D, h, w) map, so layer methods (Grad-CAM)
treat ViT tokens and CNN feature maps alike.

Captum's layer methods read the output of an `nn.Module` and expect channels on axis 1 and space after
it. A ViT hook holds tokens (B, T, D) with CLS/register tokens in front, and per-head hooks hold
(B, T, H, E); the grid comes from `model.token_layout(hook)`, never from a user's reshape function.
`grid_view` adds a forward hook that turns the hook's activations into tokens (`model.to_tokens`), the
patch tokens into a (B, D, h, w) map passed through an identity module (the one Captum hooks), and
everything back into the hook's own shape (`model.from_tokens`), so the forward pass is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vitsae.attribution.targets import TargetError
from vitsae.models.protocol import HookedModel


def spatial_hooks(model: HookedModel, image_hw: tuple[int, int]) -> list[str]:
    """The hooks whose token layout has a patch grid of more than one patch, in forward order (a CNN's
    pooled (B, C, 1, 1) output has a grid, but a map of one value locates nothing)."""
    names = []
    for name in model.hook_names():
        grid_hw = model.token_layout(name, image_hw).grid_hw
        if grid_hw is not None and grid_hw[0] * grid_hw[1] > 1:
            names.append(name)
    return names


def check_spatial_hook(model: HookedModel, hook: str, image_hw: tuple[int, int]) -> None:
    """A one-line error for a hook that is unknown or has no patch grid, listing those that have one."""
    grid_hooks = spatial_hooks(model, image_hw)
    if hook not in grid_hooks:
        known = hook in model.hook_names()
        what = "has no patch grid of more than one patch" if known else "is not a hook of this model"
        raise TargetError(
            f"Grad-CAM hook {hook!r} {what}; hooks with a spatial layout: {', '.join(grid_hooks) or '(none)'}"
        )


@contextmanager
def grid_view(model: HookedModel, hook: str, image_hw: tuple[int, int]) -> Iterator[nn.Module]:
    """Within the block, `hook`'s patch tokens pass through the yielded identity module as (B, D, h, w)."""
    check_spatial_hook(model, hook, image_hw)
    view = nn.Identity()
    layout = model.token_layout(hook, image_hw)

    name = hook

    def through_view(acts: torch.Tensor, hook: object) -> torch.Tensor:
        tokens_BTD = model.to_tokens(name, acts)
        prefix_BPD, patches_BND = tokens_BTD[:, : layout.n_prefix], tokens_BTD[:, layout.n_prefix :]
        batch, _, width = patches_BND.shape
        grid_BDhw = patches_BND.transpose(1, 2).reshape(batch, width, *layout.grid_hw)
        grid_BDhw = view(grid_BDhw)
        tokens_BTD = torch.cat([prefix_BPD, grid_BDhw.flatten(2).transpose(1, 2)], dim=1)
        return model.from_tokens(name, tokens_BTD, tuple(acts.shape))

    with model.hooks(fwd_hooks=[(hook, through_view)]):
        yield view
