"""Fixtures for the edit tests: a tiny ViT with CLS and two registers, a small CNN, pixels."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import small_cnn, tiny_vit
from vitsae.models import HookedModule, HookedViT

VIT_HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
CNN_HOOK = "body.2"


def edit_vit() -> HookedViT:
    """The tiny ViT with 2 blocks and 2 registers: tokens [CLS][2 registers][4x4 patches], width 32."""
    return tiny_vit(n_layers=2, n_registers=2)


@pytest.fixture
def vit() -> HookedViT:
    return edit_vit()


@pytest.fixture
def cnn() -> HookedModule:
    return small_cnn()


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
