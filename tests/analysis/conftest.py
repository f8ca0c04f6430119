"""Fixtures for analysis tests: a real small store (tests/helpers.py)."""

from __future__ import annotations

import pytest

from tests.helpers import harvest_small_store
from vitsae.store import ActivationStore


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    """The harvested store; treat as read-only."""
    return harvest_small_store(tmp_path_factory.mktemp("harvest"))
