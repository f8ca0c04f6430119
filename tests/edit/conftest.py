"""Fixtures for the edit tests (builders in edit_fixtures.py, also used by tests/eval)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from edit_fixtures import make_cnn, make_vit  # noqa: E402

from vitsae.models import HookedModule, HookedViT  # noqa: E402


@pytest.fixture
def vit() -> HookedViT:
    return make_vit()


@pytest.fixture
def cnn() -> HookedModule:
    return make_cnn()


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
