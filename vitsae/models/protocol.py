"""The stage contract every hooked model keeps: the `HookedModel` protocol, and the hook-name methods
`HookedViT` and `HookedModule` share.

Stages below the models (store, analysis, edit, featureviz, circuits) are typed against `HookedModel`, not
against either class, so a third kind of hooked model only has to keep this contract.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from vitsae.data.preprocess import Preprocess
from vitsae.models.layout import check_names
from vitsae.tokens import TokenLayout


@runtime_checkable
class HookedModel(Protocol):
    """A model whose hook points can be read (and written) as tokens; see docs/design.md."""

    preprocess: Preprocess

    def hook_names(self) -> list[str]:
        """Every hook point, in the order the forward pass reaches them."""
        ...

    def check_hook_names(self, names: list[str]) -> None:
        """Raise a ValueError naming each unknown hook and listing the valid ones."""
        ...

    def token_layout(self, hook_name: str, image_hw: tuple[int, int] | None = None) -> TokenLayout:
        """How the token axis of `hook_name` maps to the image."""
        ...

    def to_tokens(self, hook_name: str, acts: torch.Tensor) -> torch.Tensor:
        """A hook's own activations as (B, T, D) tokens."""
        ...

    def from_tokens(self, hook_name: str, tokens_BTD: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The inverse of `to_tokens`: tokens back to the hook's own `shape`."""
        ...

    def capture(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        """One forward stopped after the deepest requested hook, graph kept; each hook as (B, T, D)."""
        ...

    def collect(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        """`capture` without gradients."""
        ...

    def weights_hash(self) -> str:
        """sha256 of the configuration and every state-dict tensor."""
        ...

    # the two torch.nn.Module methods the stages call
    def to(self, *args, **kwargs) -> HookedModel: ...

    def eval(self) -> HookedModel: ...


class HookNames:
    """`hook_names` and `check_hook_names` from a TransformerLens `hook_dict` (filled in forward order)."""

    hook_dict: dict[str, torch.nn.Module]

    def hook_names(self) -> list[str]:
        """Every hook point, in the order the forward pass reaches them."""
        return list(self.hook_dict)

    def check_hook_names(self, names: list[str]) -> None:
        check_names(names, self.hook_names())
