"""Shared pieces of the circuit tests: a traced config, and a headless Chromium page (the browser tests'
settings; closed with the module, so the report tests can start their own Playwright after it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import launched_chromium, random_sae, recording_problems, shapes, tiny_vit
from vitsae.circuits.columns import Column, make_columns
from vitsae.circuits.config import TraceConfig
from vitsae.edit.inputs import image_batches
from vitsae.edit.splice import SpliceSite
from vitsae.models import HookedViT

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


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


def two_columns() -> tuple[HookedViT, list[SpliceSite], list[Column], list]:
    """(model, sites, columns, batches): the tiny ViT with a random SAE at each of `HOOKS` as columns "a"
    and "b", and 8 shapes images in batches of 4."""
    model = tiny_vit()
    sites = [SpliceSite(random_sae(32, hook, seed=i)) for i, hook in enumerate(HOOKS)]
    columns = make_columns(model, sites, ["a", "b"])
    return model, sites, columns, image_batches(shapes(8), model.preprocess, 8, 4)
