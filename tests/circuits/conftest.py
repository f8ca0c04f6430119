"""Shared pieces of the circuit tests: a traced config, and a headless Chromium page (the browser tests'
settings; closed with the module, so the report tests can start their own Playwright after it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS
from vitsae.circuits.config import TraceConfig


@pytest.fixture(scope="module")
def page():
    """A page that records console errors and warnings and page errors in `page.problems`."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM}; run scripts/browser.sh to install Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.problems = []
        page.on(
            "console",
            lambda m: page.problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
        yield page
        browser.close()


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
