"""Shared pieces of the circuit tests: a traced config, and a headless Chromium page (the browser tests'
settings; closed with the module, so the report tests can start their own Playwright after it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import launched_chromium, recording_problems
from vitsae.circuits.config import TraceConfig


@pytest.fixture(scope="module")
def page():
    """A page that records console errors and warnings and page errors in `page.problems`."""
    with launched_chromium() as browser:
        yield recording_problems(browser.new_page(viewport={"width": 1200, "height": 900}))


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
