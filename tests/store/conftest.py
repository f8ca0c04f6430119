"""Fixtures for store tests: a harvested store of the tiny ViT over shapes images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import shapes, tiny_vit
from tests.store.store_worker import N_IMAGES, config, harvest, one_thread


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output directory of one complete harvest (two hooks, several shards); treat as read-only."""
    out = tmp_path_factory.mktemp("harvest")
    with one_thread():
        harvest(config(out, N_IMAGES), model=tiny_vit(), source=shapes(N_IMAGES))
    return out
