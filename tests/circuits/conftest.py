"""Shared pieces of the circuit tests: a traced config, and the headless Chromium of the browser tests."""

from __future__ import annotations

from pathlib import Path

from tests.report.conftest import chromium, page  # noqa: F401  (the browser tests' Chromium fixtures)
from vitsae.circuits.config import TraceConfig


def trace_config(**overrides) -> TraceConfig:
    """A small, quiet trace: 8 images in batches of 4."""
    values = dict(
        model="module:tests.helpers:tiny_vit",
        sae=("a", "b"),
        source="shapes:8",
        target="class:1",
        out=Path("unused"),
        images=8,
        batch_size=4,
        progress=False,
    )
    return TraceConfig(**{**values, **overrides})
